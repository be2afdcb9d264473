"""Data listing, patient grouping and the validation split."""

import pytest
from tinydata import SHARED_DATA, make_tiny_kaggle

from pneumo.train.data import (
    class_weights,
    grouped_split,
    list_class_folder,
    make_split,
    patient_id,
)


@pytest.mark.parametrize("name, pid", [
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL2-IM-0587"),
    ("person1159_virus_1944.jpeg", "PERSON1159"),
    ("person1159_bacteria_3000.jpeg", "PERSON1159"),
    ("person447_virus_921_1.jpeg", "PERSON447"),
    ("odd-name.png", "ODD-NAME"),
])
def test_patient_id(name, pid):
    assert patient_id(name) == pid


def test_split_is_grouped_deterministic_and_stratified(tmp_path):
    root = make_tiny_kaggle(tmp_path, per_class=30, images_per_patient=3)
    a, b = make_split(root, 0.2, seed=7), make_split(root, 0.2, seed=7)
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert {patient_id(s.name) for s in a.train}.isdisjoint({patient_id(s.name) for s in a.val})
    assert {s.label for s in a.val} == {0, 1}
    assert len(a.train) + len(a.val) == 60
    c = make_split(root, 0.2, seed=8)
    assert [s.path for s in c.val] != [s.path for s in a.val]


def test_official_val_folder_is_added_not_substituted(tmp_path):
    root = make_tiny_kaggle(tmp_path, per_class=20)
    (root / "val" / "NORMAL").mkdir(parents=True)
    src = next((root / "train" / "NORMAL").iterdir())
    (root / "val" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(src.read_bytes())
    split = make_split(root, 0.2, seed=1)
    names = {s.name for s in split.val}
    assert "IM-9999-0001.jpeg" in names and len(names) > 1


def test_class_weights_balance():
    w = class_weights([0] * 25 + [1] * 75)
    assert w[0] * 25 == pytest.approx(w[1] * 75)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data not present")
def test_real_split_has_no_patient_on_both_sides():
    samples = list_class_folder(SHARED_DATA / "train")
    assert len(samples) == 5216
    split = grouped_split(samples, 0.2, seed=42)
    tr = {patient_id(s.name) for s in split.train}
    va = {patient_id(s.name) for s in split.val}
    assert not tr & va
    assert 0.18 < len(split.val) / len(samples) < 0.22
    # byte-identical duplicates (PROVENANCE.md) belong to one patient: same side of the split
    dup = {"person1372_bacteria_3501.jpeg", "person1372_bacteria_3502.jpeg",
           "person1372_bacteria_3503.jpeg"}
    val_names = {s.name for s in split.val}
    assert dup <= val_names or not dup & val_names


def test_external_validation_is_refused_as_training_data(tmp_path):
    from pneumo.train.data import refuse_external_val
    from pneumo.train.trainer import TrainConfig, train

    renamed = tmp_path / "local_copy"  # a copy under another name: known by its README
    (renamed / "NORMAL").mkdir(parents=True)
    (renamed / "README.md").write_text("# External validation set: half of the official test "
                                       "split\n", encoding="utf-8")
    with pytest.raises(ValueError, match="never be used as training data"):
        refuse_external_val(renamed / "NORMAL", "training data")
    ext = tmp_path / "val_here"
    (ext / "NORMAL").mkdir(parents=True)
    with pytest.raises(ValueError, match="external validation"):
        refuse_external_val(ext, "training data", external=ext)  # the same folder as --data
    refuse_external_val(tmp_path / "chest_xray", "training data", external=ext)  # fine
    with pytest.raises(ValueError, match="external validation"):
        train(TrainConfig(data=str(renamed), out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()  # refused before anything is written
