"""Ablation: paired bootstrap comparison with the baseline, and --eval-data end to end."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from tinydata import fixture_images, make_tiny_kaggle

from pneumo.train.ablation import (
    _refuse_overlap,
    eval_label,
    paired_comparison,
    resolve_eval_folder,
    stratified_indices,
    verdict,
)
from pneumo.train.trainer import EXTERNAL_LABEL


def _preds(y, ps):
    return [{"y_eval": y, "p_eval": p, "eval_paths": np.arange(len(y)).astype(str)} for p in ps]


def test_stratified_draws_keep_both_classes():
    y = np.array([0] * 7 + [1] * 13)
    idx = stratified_indices(y, 30, seed=1)
    assert idx.shape == (30, 20)
    assert np.all(y[idx] == np.sort(y)[None, :])


def test_identical_models_differ_by_zero_and_a_better_one_gains():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    weak = [y * 0.6 + rng.random(200) for _ in range(2)]
    strong = [y * 3.0 + rng.random(200) for _ in range(2)]
    same = paired_comparison({"baseline": _preds(y, weak), "gan": _preds(y, weak)}, "eval",
                             n_boot=100)
    r = same["variants"]["gan"]
    assert r["per_seed"][0]["auc"]["diff"] == 0 and r["per_seed"][0]["auc"]["ci95"] == [0, 0]
    assert r["mean"]["auc"]["verdict"] == "none"
    assert r["conclusion"].startswith("GAN images vs baseline (2 seeds): AUC: no measurable gain")
    better = paired_comparison({"baseline": _preds(y, weak), "combined": _preds(y, strong)},
                               "eval", n_boot=100)["variants"]["combined"]
    assert better["mean"]["auc"]["verdict"] == "gain"
    assert better["mean"]["auc"]["ci95"][0] > 0
    assert len(better["per_seed"]) == 2 and better["mean"]["auc"]["seed_t_ci95"] is not None
    assert verdict(0.01, 0.02, [0.01, -0.01]) == "none"  # the seeds disagree
    assert verdict(-0.02, -0.01, [-0.01]) == "loss"


def test_combined_is_also_compared_with_augmentation_and_a_lower_ece_is_a_gain():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 240)
    names = np.array([f"person{i // 2}_x.jpeg" for i in range(240)])  # patients for cross-fit
    weak = [y * 0.6 + rng.random(240) for _ in range(2)]
    strong = [y * 3.0 + rng.random(240) for _ in range(2)]

    def runs(ps):
        return [{"y_eval": y, "p_eval": p, "eval_paths": names} for p in ps]

    paired = paired_comparison({"baseline": runs(weak), "augmentation": runs(weak),
                                "combined": runs(strong)}, "eval", n_boot=100)
    assert list(paired["variants"]) == ["augmentation", "combined", "combined - augmentation"]
    on_aug = paired["variants"]["combined - augmentation"]
    assert on_aug["reference"] == "augmentation"
    assert on_aug["mean"] == paired["variants"]["combined"]["mean"]  # augmentation == baseline
    assert on_aug["conclusion"].startswith(
        "Augmentation + GAN images vs augmentation alone (2 seeds)")
    assert on_aug["mean"]["crossfit_balanced_spec"]["verdict"] == "gain"
    assert "ECE after cross-fitted calibration" in on_aug["conclusion"]
    assert verdict(-0.03, -0.01, [-0.02, -0.01], lower_is_better=True) == "gain"
    assert verdict(0.01, 0.03, [0.02, 0.01], lower_is_better=True) == "loss"
    assert verdict(-0.01, 0.03, [0.02, 0.01], lower_is_better=True) == "none"


def test_eval_folder_must_not_overlap_training_images(tmp_path):
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (tmp_path / "kaggle" / split / cls).mkdir(parents=True)
    root = tmp_path / "kaggle"
    assert resolve_eval_folder(root) == root / "test"
    _refuse_overlap(root / "test", str(root), None)  # test/ is never trained on
    with pytest.raises(ValueError, match="overlaps"):
        _refuse_overlap(root / "train", str(root), None)
    with pytest.raises(ValueError, match="overlaps"):
        _refuse_overlap(root / "test", str(root), str(root / "test"))
    assert eval_label(tmp_path / "external_val") == EXTERNAL_LABEL
    assert eval_label(root / "test") == f"evaluation folder {root / 'test'}"
    assert eval_label(root / "test", "hospital B") == "hospital B"


tf = pytest.importorskip("tensorflow")

from pneumo.cli import main  # noqa: E402


def _small_pngs(folder, sources, n, size, seed=0):
    """n small PNGs (size px) made from the fixture X-rays, with noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).convert("L").resize((size, size))
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")


@pytest.mark.slow
def test_ablation_with_eval_data_writes_the_paired_report_and_resumes(tmp_path, caplog):
    """Two variants x two seeds judged on an external folder; a rerun skips every finished run."""
    data = make_tiny_kaggle(tmp_path / "data", per_class=10)
    ext = tmp_path / "external_val"  # named like the real one: labelled as external validation
    fx = fixture_images()
    _small_pngs(ext / "NORMAL", fx["NORMAL"], 5, 24, seed=1)
    _small_pngs(ext / "PNEUMONIA", fx["PNEUMONIA"], 5, 24, seed=2)
    _small_pngs(tmp_path / "syn" / "NORMAL", fx["NORMAL"], 4, 32, seed=3)  # fake GAN images
    args = ["ablation", "--data", str(data), "--synthetic", str(tmp_path / "syn"),
            "--out", str(tmp_path / "abl"), "--eval-data", str(ext), "--seeds", "2",
            "--epochs", "1", "--img-size", "32", "--batch-size", "8", "--n-boot", "50",
            "--variants", "baseline", "gan", "augmentation", "--intensity", "equalize",
            "--select", "last", "--no-aug", "flip"]
    assert main(args) == 0
    rep = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    paired = rep["paired"]["eval"]
    assert paired["label"] == EXTERNAL_LABEL and paired["n"] == 10
    assert set(paired["variants"]) == {"gan", "augmentation"}
    for row in paired["variants"]["gan"]["per_seed"]:
        for m in ("auc", "spec_at_sens95"):
            assert set(row[m]) == {"reference", "variant", "diff", "ci95"}
            lo, hi = row[m]["ci95"]
            assert lo <= hi
    for m in ("auc", "spec_at_sens95", "crossfit_balanced_spec", "crossfit_ece"):
        mean = paired["variants"]["gan"]["mean"][m]
        assert {"diff", "ci95", "verdict", "seeds"} <= set(mean) and mean["seeds"] == 2
        assert mean["ci95"][0] <= mean["ci95"][1]
    # the primary figure on the external set, cross-fitted, and only there
    assert "crossfit_balanced_spec" not in rep["paired"]["val"]["metrics"]
    for row in paired["variants"]["gan"]["per_seed"]:
        c = row["crossfit_balanced_spec"]
        assert 0 <= c["reference"] <= 1 and c["diff"] == pytest.approx(
            c["variant"] - c["reference"])
    assert "crossfit_ece" not in rep["paired"]["val"]["metrics"]
    assert "ECE after cross-fitted calibration" in (tmp_path / "abl" / "ablation.md").read_text()
    assert "val" in rep["paired"] and set(rep["summary"]) == {"val", "eval"}
    assert set(rep["summary"]["val"]) == {"baseline", "gan", "augmentation"}
    # --no-aug switches the flip off in the augmented variant only
    def config(v):
        return json.loads((tmp_path / "abl" / v / "seed0" / "config.json").read_text())
    assert config("augmentation")["augment_off"] == ["flip"]
    assert config("baseline")["augment_off"] == [] and config("baseline")["augment"] == "none"
    assert len(rep["summary"]["val"]["gan"]["auc"]["values"]) == 2
    assert rep["info"]["intensity"] == "equalize" and rep["info"]["select"] == "last"
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert EXTERNAL_LABEL in md and "GAN images vs baseline (2 seeds)" in md
    assert "Cross-fitted balanced specificity" in md
    assert "internal validation split" in md
    for png in ("ablation_paired.png", "ablation.png"):
        assert (tmp_path / "abl" / png).exists()
    run = tmp_path / "abl" / "gan" / "seed0"
    history = list(csv.DictReader((run / "history.csv").open()))
    assert "ext_auc" in history[0] and "ext_spec_at_sens95" in history[0]
    meta = json.loads((run / "model.json").read_text())
    assert meta["intensity"] == "equalize" and meta["recipe"]["synthetic_data"] is True
    scores = json.loads((run / "ablation_metrics.json").read_text())
    # own predictions (shared preprocessing + the model's intensity) match the trainer's
    assert scores["eval"]["auc"] == pytest.approx(meta["external_val"]["ext_auc"], abs=1e-6)
    assert scores["eval"]["spec_at_sens95"] == pytest.approx(
        meta["external_val"]["ext_spec_at_sens95"], abs=1e-6)
    # one split for every run (the GAN's), only the training seed varies
    splits = {(tmp_path / "abl" / v / f"seed{k}" / "split.json").read_text()
              for v in ("baseline", "gan") for k in (0, 1)}
    assert len(splits) == 1
    # a rerun (e.g. after an interruption) skips the finished runs and rewrites the same report
    model = tmp_path / "abl" / "gan" / "seed1" / "model.keras"
    stamp = model.stat().st_mtime_ns
    caplog.set_level("INFO", logger="pneumo.train.ablation")
    assert main(args) == 0
    assert model.stat().st_mtime_ns == stamp
    assert caplog.text.count("finished earlier, skipped") == 6
    again = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert again["paired"]["eval"]["variants"]["gan"]["mean"] == paired["variants"]["gan"]["mean"]
