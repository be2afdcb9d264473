"""The drift reference written into a model file (`pneumo drift-reference`, export)."""

from __future__ import annotations

import shutil

from tinydata import fixture_images

from pneumo.app.pipeline.onnx_model import OnnxModel, read_metadata
from pneumo.cli import main
from pneumo.export.drift_reference import N_QUANTILES


def test_drift_reference_command_updates_the_model(tmp_path, test_model_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(test_model_path, model)
    images = tmp_path / "labelled"
    for cls, files in fixture_images().items():
        (images / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, images / cls / f.name)
    before, card = read_metadata(model)
    assert main(["drift-reference", str(model), "--images", str(images),
                 "--source", "six fixtures"]) == 0
    assert "drift reference from 6 images" in capsys.readouterr().out
    meta, card_after = read_metadata(model)
    ref = meta["drift_reference"]
    assert ref["source"] == "six fixtures" and ref["n"] + ref["n_refused"] == 6
    assert len(ref["score_quantiles"]) == len(ref["ood_quantiles"]) == N_QUANTILES
    assert sum(ref["n_by_label"].values()) == ref["n"]
    assert ref["score_quantiles"] == sorted(ref["score_quantiles"])
    assert 0 <= ref["borderline_rate"] <= 1 and ref["split_threshold"] == before["thresholds"][
        "balanced"]
    # everything else in the file is unchanged, and the app loads it
    assert {k: v for k, v in meta.items() if k != "drift_reference"} == {
        k: v for k, v in before.items() if k != "drift_reference"}
    assert card_after == card
    assert OnnxModel(model).metadata["drift_reference"] == ref


def test_bundled_model_carries_a_reference(model):
    ref = model.metadata["drift_reference"]
    assert ref["source"].startswith("external validation (half of the official test split)")
    assert ref["n"] + ref["n_refused"] == 312


def test_export_refuses_external_validation_as_int8_calibration_data(tmp_path):
    import pytest

    from pneumo.export.run import export_model

    ext = tmp_path / "external_val"
    (ext / "NORMAL").mkdir(parents=True)
    with pytest.raises(ValueError, match="never be used as int8 calibration data"):
        export_model(tmp_path / "no-run", ext, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything is written
