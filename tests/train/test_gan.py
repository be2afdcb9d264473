"""GANs, sampling, quality checks and the ablation runner, on tiny data."""

import csv
import json
import shutil

import numpy as np
import pytest
from tinydata import make_tiny_kaggle

pytest.importorskip("tensorflow")

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL  # noqa: E402
from pneumo.cli import main  # noqa: E402
from pneumo.train.gan import GanConfig, load_trainer, train_gan  # noqa: E402
from pneumo.train.gan_eval import evaluate_gan, precision_recall, ssim  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_kaggle(tmp_path_factory.mktemp("data"), per_class=16)


@pytest.mark.parametrize("kind", ["dcgan", "sngan"])
def test_a_few_steps_run_and_write_samples(tiny_data, tmp_path, kind):
    assert main(["gan", "train", "--data", str(tiny_data), "--out", str(tmp_path),
                 "--kind", kind, "--steps", "4", "--batch-size", "8", "--img-size", "32",
                 "--sample-every", "2"]) == 0
    assert (tmp_path / "samples" / "step000004.png").exists()
    rows = list(csv.DictReader((tmp_path / "losses.csv").open()))
    assert rows and all(np.isfinite(float(r["loss_d"])) for r in rows)


@pytest.mark.slow
def test_resume_reaches_the_identical_state(tiny_data, tmp_path):
    def cfg(out, steps):
        return GanConfig(data=str(tiny_data), out=str(out), steps=steps, batch_size=8,
                         img_size=32, sample_every=2, checkpoint_every=2, seed=11)

    train_gan(cfg(tmp_path / "straight", 4))
    train_gan(cfg(tmp_path / "split", 2))
    train_gan(cfg(tmp_path / "split", 4), resume=True)
    a, b = load_trainer(tmp_path / "straight"), load_trainer(tmp_path / "split")
    assert a.step == b.step == 4
    for wa, wb in zip(a.G.get_weights() + a.D.get_weights(),
                      b.G.get_weights() + b.D.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_sample_writes_kaggle_layout_with_manifest(tiny_data, tmp_path):
    train_gan(GanConfig(data=str(tiny_data), out=str(tmp_path / "g"), steps=2, batch_size=8,
                        img_size=32, sample_every=2, checkpoint_every=2))
    assert main(["gan", "sample", "--checkpoint", str(tmp_path / "g"), "--n", "12",
                 "--out", str(tmp_path / "syn")]) == 0
    files = sorted((tmp_path / "syn" / "NORMAL").glob("*.png"))
    assert len(files) == 12
    rows = list(csv.DictReader((tmp_path / "syn" / "manifest.csv").open()))
    assert len(rows) == 12 and rows[0]["checkpoint_step"] == "2"


def test_quality_measures_on_known_cases():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, rng.random((32, 32))) < 0.2
    real = rng.standard_normal((200, 8))
    pr_same = precision_recall(real, real + 1e-6)
    assert pr_same["precision"] == 1.0 and pr_same["recall"] == 1.0
    pr_far = precision_recall(real, real + 100)
    assert pr_far["precision"] == 0.0


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="bundled model missing")
def test_memorisation_check_flags_exact_copies(tiny_data, tmp_path):
    copies = tmp_path / "syn" / "NORMAL"
    copies.mkdir(parents=True)
    for p in sorted((tiny_data / "train" / "NORMAL").glob("*.jpeg"))[:12]:
        shutil.copy(p, copies / p.name)
    rep = evaluate_gan(tiny_data, tmp_path / "syn", DEFAULT_MODEL, tmp_path / "q",
                       class_name="NORMAL")
    # validation images may be among the copies; the training ones must all be flagged
    assert rep["near_copy_fraction"] >= 0.5
    assert rep["best_ssim_max"] > 0.99
    assert (tmp_path / "q" / "closest_pairs.png").exists()
    assert json.loads((tmp_path / "q" / "gan_quality.json").read_text())["domain_fid"] >= 0
