"""`pneumo recipes`: the recipe table from runs' external predictions (no training needed)."""

import csv
import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

from pneumo.app.pipeline.calibration import logit, sigmoid  # noqa: E402
from pneumo.cli import main  # noqa: E402
from pneumo.train.data import EXTERNAL_LABEL  # noqa: E402
from pneumo.train.recipe_report import load_candidate, recipe_summary  # noqa: E402


def _fake_run(folder, y, p, *, seed, intensity="none"):
    folder.mkdir(parents=True)
    with (folder / "external_predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "probability"])
        for i, (yy, pp) in enumerate(zip(y, p, strict=True)):
            name = f"person{i}_bacteria_{i}.jpeg" if yy else f"IM-{i:04d}-0001.jpeg"
            w.writerow([name, int(yy), f"{pp:.6f}"])
    (folder / "model.json").write_text(json.dumps({
        "input_size": 96, "intensity": intensity, "train_seconds": 600.0, "parameters": 1000,
        "recipe": {"seed": seed, "intensity": intensity, "mixup": 0.0}}))
    with (folder / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss", "ext_auc", "ext_spec_at_sens95"])
        w.writerow([1, 0.5, 0.8, 0.4])
        w.writerow([2, 0.4, 0.9, 0.6])


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 100)
    for k in range(2):
        p = sigmoid(2.0 * (y - 0.5) * 2 + rng.normal(0, 1.5, len(y)))
        _fake_run(tmp_path / "runs" / f"eq-s{k}", y, p, seed=k, intensity="equalize")
    return tmp_path / "runs"


def test_ensemble_is_the_mean_logit(runs):
    c = load_candidate("ens", [runs / "eq-s0", runs / "eq-s1"])
    a, b = load_candidate("a", [runs / "eq-s0"]), load_candidate("b", [runs / "eq-s1"])
    np.testing.assert_allclose(logit(c.p), (logit(a.p) + logit(b.p)) / 2, atol=1e-6)


def test_recipes_table(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["recipes", "--runs", str(runs), "--out", str(out),
                 "--ensemble", "eq-ens2=eq-s0,eq-s1"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "recipes.json").read_text())}
    assert set(rows) == {"eq-s0", "eq-s1", "eq-ens2"}
    ens = rows["eq-ens2"]
    assert ens["members"] == 2 and ens["seeds"] == [0, 1] and ens["train_minutes"] == 20.0
    for r in rows.values():
        assert r["ci95"]["auc"][0] <= r["auc"] <= r["ci95"]["auc"][1]
        assert 0 <= r["crossfit"]["balanced"]["specificity"] <= 1
        assert "equalize" in r["recipe"]
    text = (out / "README.md").read_text()
    assert EXTERNAL_LABEL in text and "eq-ens2" in text and "cross-fitted" in text
    assert (out / "recipes.png").stat().st_size > 0
    assert "eq-ens2" in capsys.readouterr().out


def test_a_fine_tune_names_its_starting_run():
    meta = {"input_size": 160, "recipe": {
        "epochs": 1, "learning_rate": 1e-4,
        "init_from": {"path": "runs/recipe/g224e30-s42/model.keras", "version": "v",
                      "sha256": "0" * 64}}}
    assert recipe_summary(meta) == ("160 px, 1 epoch, fine-tuned from g224e30-s42 at "
                                    "learning rate 0.0001")


def test_a_student_names_its_architecture_and_teacher():
    meta = {"input_size": 224, "arch": "stem4", "recipe": {
        "epochs": 25, "distillation": {
            "teacher": {"name": "pneumo-cnn-ensemble2", "sha256": "0" * 64},
            "views": 4, "temperature": 2.0, "alpha": 0.7}}}
    assert recipe_summary(meta) == ("224 px, 25 epochs, arch stem4, distilled from "
                                    "pneumo-cnn-ensemble2 (4 views, T 2, alpha 0.7)")


def test_recipes_bad_ensemble_spec(runs, tmp_path):
    with pytest.raises(SystemExit):
        main(["recipes", "--runs", str(runs), "--out", str(tmp_path), "--ensemble", "nope"])
