"""The recipe options of issue 10 on tiny real data: external validation, intensity,
mixup, balanced sampling, erasing, width, last-epoch selection, side-by-side evaluation."""

import csv
import json

import numpy as np
import pytest
from tinydata import make_tiny_kaggle

pytest.importorskip("tensorflow")

from pneumo.app.pipeline.preprocess import normalize_intensity  # noqa: E402
from pneumo.cli import main  # noqa: E402
from pneumo.train.augment import AugmentConfig  # noqa: E402
from pneumo.train.augment_tf import augment_batch  # noqa: E402
from pneumo.train.data import EXTERNAL_LABEL, epoch_order  # noqa: E402
from pneumo.train.tf_data import train_dataset  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_kaggle(tmp_path_factory.mktemp("data"), per_class=16)


@pytest.fixture(scope="module")
def tiny_external(tmp_path_factory):
    # other perturbed copies, other seed: a separate labelled folder, never trained on
    return make_tiny_kaggle(tmp_path_factory.mktemp("ext"), per_class=6, seed=9) / "train"


@pytest.fixture(scope="module")
def recipe_run(tiny_data, tiny_external, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "2",
               "--img-size", "48", "--batch-size", "16", "--seed", "3",
               "--external-val", str(tiny_external), "--intensity", "equalize",
               "--mixup", "0.2", "--label-smoothing", "0.1", "--balance", "sampling",
               "--aug-set", "erasing=0.5", "--width", "0.5", "--select", "last"])
    assert rc == 0
    return out


def test_external_validation_is_judged_every_epoch(recipe_run):
    with (recipe_run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for r in rows:
        assert 0.0 <= float(r["ext_auc"]) <= 1.0
        assert 0.0 <= float(r["ext_spec_at_sens95"]) <= 1.0
    meta = json.loads((recipe_run / "model.json").read_text())
    ext = meta["external_val"]
    assert ext["label"] == EXTERNAL_LABEL and ext["n"] == 12
    assert ext["ext_auc"] == pytest.approx(float(rows[-1]["ext_auc"]))  # --select last
    assert set(ext["at_internal_thresholds"]) == {"balanced", "screening"}


def test_recipe_is_recorded(recipe_run):
    meta = json.loads((recipe_run / "model.json").read_text())
    assert meta["intensity"] == "equalize"
    r = meta["recipe"]
    assert (r["mixup"], r["label_smoothing"], r["class_balance"], r["width"]) == (
        0.2, 0.1, "sampling", 0.5)
    assert r["augment_params"]["erasing"] == 0.5
    assert meta["best_epoch"] == 2


def test_evaluate_reports_internal_and_external_side_by_side(recipe_run, tiny_external,
                                                             tiny_data, tmp_path, capsys):
    js, rep = tmp_path / "m.json", tmp_path / "report"
    assert main(["evaluate", "--model", str(recipe_run / "model.keras"), "--data",
                 str(tiny_data), "--external-val", str(tiny_external), "--json", str(js),
                 "--report", str(rep)]) == 0
    res = json.loads(js.read_text())
    assert res["label"] == "internal validation"
    assert res["external"]["label"] == EXTERNAL_LABEL and res["external"]["n"] == 12
    out = capsys.readouterr().out
    assert "internal validation" in out and EXTERNAL_LABEL in out
    text = (rep / "report.md").read_text()
    assert "side by side" in text and EXTERNAL_LABEL in text
    for f in ("roc_external.png", "calibration_external.png", "training_curves.png"):
        assert (rep / f).stat().st_size > 0


def test_equalize_flattens_the_histogram_and_is_monotonic():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(90, 20, (64, 64)), 0, 255).astype(np.uint8)
    eq = normalize_intensity(img, "equalize")
    assert eq.dtype == np.uint8 and eq.min() == 0 and eq.max() == 255
    order = np.argsort(img.ravel(), kind="stable")
    assert np.all(np.diff(eq.ravel()[order].astype(int)) >= 0)  # keeps the order of grey levels
    # a global gamma/contrast change of the same image gives (nearly) the same result
    darker = np.clip(255.0 * (img / 255.0) ** 1.4, 0, 255).astype(np.uint8)
    assert np.abs(normalize_intensity(darker, "equalize").astype(int) - eq).mean() < 6
    batch = np.stack([img, darker])
    assert np.array_equal(normalize_intensity(batch, "equalize")[0], eq)
    assert np.array_equal(normalize_intensity(img, "none"), img)
    st = normalize_intensity(img, "stretch")
    assert st.min() == 0 and st.max() == 255
    with pytest.raises(ValueError):
        normalize_intensity(img, "clahe?")


def test_balanced_sampling_draws_both_classes_equally():
    y = np.array([0] * 10 + [1] * 90)
    order = epoch_order(y, seed=1, epoch=1, balanced=True)
    assert len(order) == 100 and (y[order] == 0).sum() == 50
    assert np.array_equal(order, epoch_order(y, seed=1, epoch=1, balanced=True))
    assert sorted(epoch_order(y, seed=1, epoch=1)) == list(range(100))


def test_mixup_mixes_labels_and_keeps_the_dominant_image():
    x = np.concatenate([np.zeros((8, 16, 16), np.uint8), np.full((8, 16, 16), 255, np.uint8)])
    y = np.array([0] * 8 + [1] * 8)
    images, labels, w = next(iter(train_dataset(
        x, y, {0: 1.0, 1: 1.0}, batch_size=16, epoch=1, seed=0,
        augment=AugmentConfig.none(), mixup=0.4)))
    images, labels = images.numpy(), labels.numpy()[:, 0]
    means = images.reshape(16, -1).mean(axis=1)
    np.testing.assert_allclose(means, labels, atol=1e-5)  # pixel mean = mixed label here
    assert ((labels > 0) & (labels < 1)).any()
    assert np.all(np.abs(labels - np.round(labels)) <= 0.5)


def test_random_erasing_and_aug_set():
    cfg = AugmentConfig.none().with_values(["erasing=1"])
    assert cfg.erasing == 1.0 and cfg.active
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    out = augment_batch(x, cfg, np.array([1, 2])).numpy()
    for i in range(4):
        changed = np.abs(out[i] - x[i]) > 0
        assert 0.01 < changed.mean() < 0.2  # one rectangle of 10-35 % of each side
    with pytest.raises(ValueError):
        AugmentConfig().with_values(["colour=2"])


def test_burned_in_text_only_touches_the_corners_and_is_seeded():
    from pneumo.train.overlays import burn_in_text

    x = np.full((6, 96, 96), 60, np.uint8)
    a, b = burn_in_text(x, seed=1), burn_in_text(x, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, burn_in_text(x, seed=2))
    changed = a != x
    assert changed.reshape(6, -1).any(axis=1).all()  # every image got some text
    centre = changed[:, 30:66, 30:66]
    assert not centre.any()  # the lungs in the middle are never written on
    assert a.max() > 150  # near-white text


def test_alternative_images_replace_originals_with_their_probability():
    x = np.zeros((32, 16, 16), np.uint8)
    alt = np.full((32, 16, 16), 255, np.uint8)
    y = np.array([0, 1] * 16)
    for prob, expect in ((1.0, 1.0), (0.0, 0.0)):
        images, _, _ = next(iter(train_dataset(
            x, y, {0: 1.0, 1: 1.0}, batch_size=32, epoch=1, seed=0,
            augment=AugmentConfig.none(), x_alt=alt, alt_prob=prob)))
        assert float(images.numpy().mean()) == pytest.approx(expect)
    images, _, _ = next(iter(train_dataset(
        x, y, {0: 1.0, 1: 1.0}, batch_size=32, epoch=1, seed=0,
        augment=AugmentConfig.none(), x_alt=alt, alt_prob=0.5)))
    share = float(images.numpy().reshape(32, -1).mean(axis=1).mean())
    assert 0.2 < share < 0.8
