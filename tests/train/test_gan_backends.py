"""`pneumo gan train` on both Keras backends (JAX in a subprocess: Keras picks its backend at
import), Keras-native checkpoints that resume exactly, and the quality curve, on tiny data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tinydata import make_tiny_kaggle

pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL  # noqa: E402
from pneumo.cli import main  # noqa: E402
from pneumo.train.gan import GanConfig, load_trainer, train_gan  # noqa: E402
from pneumo.train.gan_quality import best_step, read_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_kaggle(tmp_path_factory.mktemp("data"), per_class=16)


def gan_train_jax(data: Path, out: Path, steps: int, *extra: str) -> None:
    """`pneumo gan train --backend jax` in its own process (a tiny DCGAN at 32 px)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env.pop("KERAS_BACKEND", None)
    cmd = [sys.executable, "-m", "pneumo.cli", "gan", "train", "--data", str(data), "--out",
           str(out), "--steps", str(steps), "--batch-size", "8", "--img-size", "32",
           "--sample-every", "2", "--seed", "5", "--backend", "jax", *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def latest_checkpoint(run: Path) -> Path:
    return run / "ckpt" / (run / "ckpt" / "latest").read_text().strip()


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a Keras .weights.h5 file, by its path in the file."""
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def test_jax_backend_trains_and_its_checkpoint_loads_on_tensorflow(tiny_data, tmp_path):
    run = tmp_path / "jax"
    gan_train_jax(tiny_data, run, 2)
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    assert state == {"step": 2, "backend": "jax"}
    rows = list(csv.DictReader((run / "losses.csv").open()))
    assert [r["step"] for r in rows] == ["2"]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("loss_d", "loss_g"))
    assert (run / "samples" / "step000002.png").is_file()
    # Keras-native weights: the JAX run's checkpoint loads into a TensorFlow-backend trainer
    trainer = load_trainer(run)
    assert trainer.backend == "tensorflow" and trainer.step == 2
    images = trainer.generate(trainer.fixed_z[:4], trainer.fixed_c[:4])
    assert images.shape == (4, 32, 32, 1) and np.isfinite(images).all()


@pytest.mark.slow
def test_a_resumed_jax_run_continues_at_the_same_step_with_the_same_state(tiny_data, tmp_path):
    gan_train_jax(tiny_data, tmp_path / "straight", 4)
    gan_train_jax(tiny_data, tmp_path / "split", 2)
    gan_train_jax(tiny_data, tmp_path / "split", 4, "--resume")
    a, b = latest_checkpoint(tmp_path / "straight"), latest_checkpoint(tmp_path / "split")
    assert json.loads((a / "state.json").read_text())["step"] == 4
    assert json.loads((b / "state.json").read_text())["step"] == 4
    for name in ("generator.weights.h5", "discriminator.weights.h5"):
        wa, wb = h5_arrays(a / name), h5_arrays(b / name)
        assert wa.keys() == wb.keys() and wa
        for key in wa:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=f"{name} {key}")
    with np.load(a / "optimizers.npz") as oa, np.load(b / "optimizers.npz") as ob:
        assert sorted(oa.files) == sorted(ob.files)
        for key in oa.files:
            np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="bundled model missing")
def test_the_quality_curve_is_written_and_its_feature_model_is_pinned(tiny_data, tmp_path):
    def cfg(steps):
        return GanConfig(data=str(tiny_data), out=str(tmp_path / "g"), steps=steps,
                         batch_size=8, img_size=32, sample_every=2, checkpoint_every=2,
                         eval_every=2, eval_n=16)

    train_gan(cfg(4))
    rows = read_curve(tmp_path / "g" / "quality.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    for r in rows:
        assert float(r["domain_fid"]) >= 0 and 0 <= float(r["recall"]) <= 1
        assert int(r["n_synthetic"]) == 16
    best = best_step(rows)
    assert best in (2, 4)
    assert (tmp_path / "g" / "quality.png").stat().st_size > 0
    # the curve's pick is kept apart from the newest checkpoints, and sampled with --best
    assert json.loads((tmp_path / "g" / "ckpt" / "best" / "state.json").read_text())["step"] == best
    assert main(["gan", "sample", "--checkpoint", str(tmp_path / "g"), "--best", "--n", "3",
                 "--out", str(tmp_path / "syn")]) == 0
    manifest = list(csv.DictReader((tmp_path / "syn" / "manifest.csv").open()))
    assert {r["checkpoint_step"] for r in manifest} == {str(best)} and len(manifest) == 3
    pin = json.loads((tmp_path / "g" / "quality_model.json").read_text())
    assert len(pin["sha256"]) == 64
    # a resumed run whose feature model is not the pinned one is refused
    (tmp_path / "g" / "quality_model.json").write_text(json.dumps({**pin, "sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="feature model"):
        train_gan(cfg(6), resume=True)
