"""Issue 27: distillation from an ONNX teacher on tiny data (`pneumo train --teacher`).

The teacher is the bundled int8 pair; the student a `stem4` at 64 px. The teacher's logit
cache is made once per view and resumes; runs resume per epoch; external validation is
refused as training data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pneumo.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def teacher(test_model_path) -> Path:
    return test_model_path


@pytest.fixture(scope="module")
def distilled(tiny_kaggle, teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("distilled")
    assert main(["train", "--data", str(tiny_kaggle), "--out", str(out), "--epochs", "2",
                 "--img-size", "64", "--batch-size", "16", "--seed", "5", "--arch", "stem4",
                 "--teacher", str(teacher), "--teacher-views", "3", "--temperature", "2",
                 "--distill-alpha", "0.7"]) == 0
    return out


def _cache(run: Path) -> Path:
    (folder,) = (run / "cache").glob("teacher-*")
    return folder


def test_the_teacher_logit_is_its_mean_cam_and_agrees_with_its_probability(teacher):
    from pneumo.bench.models import fixture_images
    from pneumo.train.distill import Teacher

    t = Teacher(teacher, threads=1)
    x = np.clip(np.rint(fixture_images(224, 4)[..., 0] * 255), 0, 255).astype(np.uint8)
    logits = t.logits(x)
    out = dict(zip(t.outputs, t.model.session.run(None, {"image": x[..., None] / np.float32(255)}),
                   strict=True))
    p = out["probability"].ravel()
    assert np.allclose(1 / (1 + np.exp(-logits)), p, atol=1e-4)
    assert t.describe()["logit"] == "mean of its CAM"


def test_a_distilled_run_records_the_teacher_and_the_recipe(distilled, teacher):
    from pneumo.app.pipeline.onnx_model import file_sha256

    meta = json.loads((distilled / "model.json").read_text())
    d = meta["recipe"]["distillation"]
    assert d["teacher"]["sha256"] == file_sha256(teacher)
    assert (d["views"], d["temperature"], d["alpha"]) == (3, 2.0, 0.7)
    assert meta["arch"] == "stem4" and meta["input_size"] == 64
    history = json.loads((distilled / "state.json").read_text())["history"]
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)


def test_the_cache_holds_the_image_itself_then_augmented_views(distilled, tiny_kaggle):
    cache = _cache(distilled)
    manifest = json.loads((cache / "manifest.json").read_text())
    views = [np.load(cache / f"view{k}.npy") for k in range(3)]
    logits = [np.load(cache / f"logits{k}.npy") for k in range(3)]
    assert manifest["views"] == 3 and all(v.shape == (manifest["n"], 64, 64) for v in views)
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[1], views[2])
    assert all(len(g) == manifest["n"] and np.isfinite(g).all() for g in logits)


def test_the_cache_resumes_at_the_view_it_stopped_in(distilled, tiny_kaggle, teacher, tmp_path,
                                                     caplog):
    run = shutil.copytree(distilled, tmp_path / "run")
    for name in ("state.json", "checkpoint.keras", "model.keras"):
        (run / name).unlink()  # a fresh run over the same cache
    cache = _cache(run)
    before = np.load(cache / "logits0.npy")
    (cache / "logits2.npy").unlink()  # as if stopped while the third view was made
    caplog.set_level("INFO", logger="pneumo.train.distill")
    assert main(["train", "--data", str(tiny_kaggle), "--out", str(run), "--epochs", "1",
                 "--img-size", "64", "--batch-size", "16", "--seed", "5", "--arch", "stem4",
                 "--teacher", str(teacher), "--teacher-views", "3", "--temperature", "2",
                 "--distill-alpha", "0.7"]) == 0
    assert "teacher view 1/3: cached" in caplog.text and "teacher view 2/3: cached" in caplog.text
    assert "teacher view 3/3: done" in caplog.text
    np.testing.assert_array_equal(np.load(cache / "logits0.npy"), before)
    np.testing.assert_array_equal(np.load(cache / "logits2.npy"),
                                  np.load(distilled.joinpath(cache.relative_to(run))
                                          / "logits2.npy"))  # the same seeded views again


def test_a_distilled_run_resumes_per_epoch(distilled, tmp_path):
    run = shutil.copytree(distilled, tmp_path / "run")
    before = json.loads((run / "state.json").read_text())["history"]
    assert main(["train", "--data", "unused-on-resume", "--out", str(run), "--epochs", "3",
                 "--img-size", "64"]) == 0
    after = json.loads((run / "state.json").read_text())["history"]
    assert len(after) == 3 and after[:2] == before


def test_distillation_refuses_external_validation(teacher, tmp_path):
    ext = tmp_path / "external_val"
    (ext / "NORMAL").mkdir(parents=True)
    with pytest.raises(ValueError, match="external validation"):
        main(["train", "--data", str(ext), "--out", str(tmp_path / "run"), "--arch", "stem4",
              "--teacher", str(teacher)])


@pytest.mark.parametrize("extra", [["--mixup", "0.2"], ["--distill-alpha", "1.5"],
                                   ["--teacher-views", "0"]])
def test_distillation_settings_are_checked_before_any_work(tiny_kaggle, teacher, tmp_path,
                                                           extra):
    with pytest.raises(SystemExit, match="--teacher"):
        main(["train", "--data", str(tiny_kaggle), "--out", str(tmp_path / "run"),
              "--teacher", str(teacher), *extra])


def test_the_distillation_loss_mixes_hard_labels_and_soft_targets():
    import keras

    from pneumo.train.distill import DistillLoss

    y_true = np.array([[1.0, 3.0], [0.0, -2.0]], dtype="float32")
    p = np.array([[0.9], [0.2]], dtype="float32")
    hard = -np.log([0.9, 0.8])
    s = np.log(p[:, 0] / (1 - p[:, 0]))
    soft = []
    for t, si in zip(y_true[:, 1], s, strict=True):
        pt, ps = 1 / (1 + np.exp(-t / 2)), 1 / (1 + np.exp(-si / 2))
        soft.append(-(pt * np.log(ps) + (1 - pt) * np.log(1 - ps)))
    want = np.mean(0.3 * hard + 0.7 * 4 * np.array(soft))
    got = float(keras.ops.convert_to_numpy(DistillLoss(2.0, 0.7)(y_true, p)))
    assert got == pytest.approx(want, rel=1e-4)
