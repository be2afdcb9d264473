"""pneumo/train/report.py on its own: the Markdown report and plots of a made-up Evaluation."""

import json

import numpy as np
import pytest

from pneumo.train.evaluate import Evaluation, format_table
from pneumo.train.metrics import bootstrap_ci, metrics_at
from pneumo.train.report import write_report

pytest.importorskip("matplotlib")


def _evaluation(seed: int, label: str | None = None, shifts: bool = False) -> Evaluation:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(40), np.ones(60)].astype(int)
    p = np.clip(np.r_[rng.normal(0.3, 0.2, 40), rng.normal(0.7, 0.2, 60)], 0, 1)
    points = {}
    for mode, t in (("balanced", 0.5), ("screening", 0.3)):
        points[mode] = {**metrics_at(y, p, t), "ci95": bootstrap_ci(y, p, t, n_boot=20)}
    return Evaluation(model={"name": "pneumo-test", "version": "1", "input_size": 96,
                             "thresholds": {"balanced": 0.5, "screening": 0.3}},
                      labels=y, probabilities=p, operating_points=points,
                      acquisition_shifts={"gamma 0.7": metrics_at(y, p, 0.5)} if shifts else None,
                      data=f"set{seed}", label=label)


def test_report_files_and_figures(tmp_path):
    res = _evaluation(0, "internal validation", shifts=True)
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,auc,val_loss,val_auc\n1,0.7,0.6,0.69,0.65\n"
                       "2,0.5,0.8,0.55,0.78\n")
    path = write_report(res, tmp_path / "rep", model_path="m.onnx", history_csv=history)
    for f in ("report.md", "metrics.json", "roc.png", "calibration.png", "confusion.png",
              "training_curves.png"):
        assert (tmp_path / "rep" / f).read_bytes()[:1], f
    text = path.read_text()
    bal = res.operating_points["balanced"]
    assert f"| balanced | 0.5000 | {bal['accuracy']:.3f}" in text
    assert "n = 100 NORMAL 40, PNEUMONIA 60" in text
    assert "## Under acquisition shifts" in text and "| gamma 0.7 |" in text
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text()) == json.loads(
        json.dumps(res.to_json()))


def test_report_with_an_external_set(tmp_path):
    res = _evaluation(0, "internal validation")
    res.external = _evaluation(1, "external validation")
    text = write_report(res, tmp_path, model_path="m.onnx").read_text()
    assert "## Internal and external validation side by side" in text
    assert "| external validation (n=100) | balanced | 0.5000 |" in text
    assert (tmp_path / "roc_external.png").stat().st_size > 0
    assert "Under acquisition shifts" not in text


def test_one_class_set_gets_no_roc(tmp_path):
    res = _evaluation(0)
    keep = res.labels == 1
    res.labels, res.probabilities = res.labels[keep], res.probabilities[keep]
    write_report(res, tmp_path, model_path="m.onnx")
    assert not (tmp_path / "roc.png").exists() and (tmp_path / "confusion.png").exists()


def test_format_table_names_the_set_and_each_mode():
    res = _evaluation(0)
    res.external = _evaluation(1, "external validation")
    table = format_table(res)
    assert table.startswith("[evaluation data]\nn = 100 ({'NORMAL': 40, 'PNEUMONIA': 60})")
    assert table.count("[balanced] threshold 0.5000") == 2
    assert "\n[external validation]\n" in table
