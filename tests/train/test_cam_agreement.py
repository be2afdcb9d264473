"""The student-vs-teacher heatmap agreement (issue 27): the measure and its CLI."""

import json

import numpy as np

from pneumo.app.updates.model_store import REFERENCE_DIR
from pneumo.cli import main
from pneumo.train.cam_agreement import map_agreement


def test_identical_maps_agree_fully_and_opposite_maps_not_at_all():
    a = np.random.default_rng(0).normal(size=(56, 56))
    assert np.allclose(map_agreement(a, a), (1.0, 1.0))
    corr, iou = map_agreement(a, -a)
    assert np.isclose(corr, -1.0) and iou == 0.0
    corr, iou = map_agreement(a, 3 * a + 2)  # the measure ignores scale and offset
    assert np.isclose(corr, 1.0) and iou == 1.0


def test_a_model_agrees_with_itself_on_real_images(test_model_path, tmp_path, capsys):
    out = tmp_path / "cam.json"
    assert main(["evaluate", "--model", str(test_model_path), "--data", str(REFERENCE_DIR),
                 "--cam-teacher", str(test_model_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    n = sum(1 for p in REFERENCE_DIR.rglob("*") if p.is_file()
            and p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    assert result["correlation"]["n"] == n > 0
    assert np.isclose(result["correlation"]["mean"], 1.0)
    assert np.isclose(result["top10_iou"]["mean"], 1.0)
    assert set(result["by_class"]) == {"NORMAL", "PNEUMONIA"}
    assert "CAM agreement" in capsys.readouterr().out
