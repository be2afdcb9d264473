"""Training on a Keras backend other than TensorFlow (`pneumo train --backend jax`).

The GPU machine this project may borrow has JAX but no TensorFlow: the run there must use
the same model, recipe flags and run folder, and the result must export here with
TensorFlow. The augmentation and input (`train.augment_keras`, `train.keras_data`) are
checked on the test process's own backend; the end-to-end run happens in a subprocess on
JAX with TensorFlow made unimportable, like on that machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinydata import make_tiny_kaggle

keras = pytest.importorskip("keras")

from pneumo.train.augment import AugmentConfig  # noqa: E402
from pneumo.train.augment_keras import affine_transforms, augment_batch  # noqa: E402
from pneumo.train.data import epoch_order  # noqa: E402
from pneumo.train.keras_data import EpochBatches, to_float  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _batch():
    return np.random.default_rng(0).random((4, 32, 32, 1)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_same_draws_same_output_and_range():
    x = _batch()
    a = _np(augment_batch(x, AugmentConfig(), np.random.default_rng([3, 4])))
    b = _np(augment_batch(x, AugmentConfig(), np.random.default_rng([3, 4])))
    c = _np(augment_batch(x, AugmentConfig(), np.random.default_rng([3, 5])))
    assert a.shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_everything_off_is_identity_and_flip_only_mirrors():
    x = _batch()
    off = _np(augment_batch(x, AugmentConfig.none(), np.random.default_rng(1)))
    np.testing.assert_allclose(off, x, atol=1e-6)
    cfg = AugmentConfig.none()
    cfg.flip = True
    out = _np(augment_batch(x, cfg, np.random.default_rng(9)))
    kinds = [np.allclose(o, i, atol=1e-5) or np.allclose(o, i[:, ::-1], atol=1e-5)
             for o, i in zip(out, x, strict=True)]
    assert all(kinds)


def test_affine_transforms_identity_and_rotation_about_the_centre():
    none = affine_transforms(AugmentConfig.none(), 3, 32, np.random.default_rng(0))
    np.testing.assert_allclose(none, [[1, 0, 0, 0, 1, 0, 0, 0]] * 3, atol=1e-6)
    cfg = AugmentConfig.none()
    cfg.rotation_deg = 10.0
    t = affine_transforms(cfg, 5, 32, np.random.default_rng(0))
    c = 15.5  # the centre maps to itself: input = A @ (c, c) + b
    np.testing.assert_allclose(t[:, 0] * c + t[:, 1] * c + t[:, 2], c, atol=1e-4)
    np.testing.assert_allclose(t[:, 3] * c + t[:, 4] * c + t[:, 5], c, atol=1e-4)
    assert np.all(np.abs(np.degrees(np.arcsin(t[:, 3]))) <= 10.0 + 1e-4)


def test_epoch_batches_follow_the_epoch_order_and_repeat_exactly():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 24, 24), dtype=np.uint8)
    y = np.array([0] * 10 + [1] * 30)
    weights = {0: 2.0, 1: 0.5}
    kw = dict(batch_size=16, epoch=2, seed=7, augment=AugmentConfig.none())
    ds = EpochBatches(x, y, weights, **kw)
    assert len(ds) == 3
    images, labels, w = ds[0]
    order = epoch_order(y, seed=7, epoch=2)
    np.testing.assert_allclose(_np(images), to_float(x[order[:16]]), atol=1e-6)
    np.testing.assert_array_equal(labels[:, 0], y[order[:16]])
    np.testing.assert_array_equal(w, [weights[int(c)] for c in y[order[:16]]])
    assert _np(ds[2][0]).shape == (8, 24, 24, 1)
    again = EpochBatches(x, y, weights, **{**kw, "augment": AugmentConfig(),
                                           "mixup": 0.2, "balanced_sampling": True})
    again2 = EpochBatches(x, y, weights, **{**kw, "augment": AugmentConfig(),
                                            "mixup": 0.2, "balanced_sampling": True})
    np.testing.assert_array_equal(_np(again[1][0]), _np(again2[1][0]))
    mixed_labels = again[1][1]
    assert np.all((mixed_labels >= 0) & (mixed_labels <= 1))


def test_a_run_refuses_the_wrong_backend():
    from pneumo.train.trainer import check_backend

    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    with pytest.raises(SystemExit, match="KERAS_BACKEND"):
        check_backend(other)
    with pytest.raises(ValueError, match="unknown backend"):
        check_backend("theano")


@pytest.mark.slow
def test_jax_run_without_tensorflow_resumes_and_exports(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("tensorflow")  # for the export half
    data = make_tiny_kaggle(tmp_path / "data", per_class=12)
    ext = make_tiny_kaggle(tmp_path / "ext", per_class=4, seed=9) / "train"
    block = tmp_path / "block"
    block.mkdir()
    # as on the GPU machine: TensorFlow (and tf2onnx) cannot be imported at all
    (block / "sitecustomize.py").write_text(
        "import sys\nsys.modules['tensorflow'] = None\nsys.modules['tf2onnx'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{REPO}", "KERAS_BACKEND": "jax"}
    out = tmp_path / "run"

    def train(epochs: int) -> str:
        cmd = [sys.executable, "-m", "pneumo.cli", "train", "--backend", "jax",
               "--data", str(data), "--out", str(out), "--epochs", str(epochs),
               "--img-size", "32", "--batch-size", "8", "--seed", "5", "--width", "0.5",
               "--external-val", str(ext), "--no-aug", "flip", "--select", "last"]
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    log = train(1)
    assert "jax on cpu" in log.lower()
    log = train(2)
    assert "resuming after epoch 1" in log
    config = json.loads((out / "config.json").read_text())
    meta = json.loads((out / "model.json").read_text())
    assert config["backend"] == "jax" and meta["recipe"]["backend"] == "jax"
    assert meta["epochs_run"] == 2 and "ext_auc" in meta["external_val"]
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "ext_auc" in history[0]

    # here, with TensorFlow: the JAX-trained model exports and ONNX Runtime agrees with it
    from pneumo.cli import main

    exp = tmp_path / "export"
    assert main(["export", "--model", str(out), "--calib-data", str(data), "--out", str(exp),
                 "--n-calib", "8", "--min-agreement", "0", "--max-auc-drop", "1"]) == 0
    parity = json.loads((exp / "parity.json").read_text())
    assert parity["n_val"] > 0 and parity["fp32_vs_keras_abs_delta_p_max"] < 1e-4
    import onnxruntime as ort

    model = keras.models.load_model(out / "model.keras", compile=False)
    x = to_float(np.random.default_rng(1).integers(0, 255, (3, 32, 32), dtype=np.uint8))
    sess = ort.InferenceSession(str(exp / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    onnx_p = np.asarray(sess.run(["probability"], {"image": x})[0]).ravel()
    np.testing.assert_allclose(onnx_p, np.asarray(model.predict(x, verbose=0)).ravel(),
                               atol=1e-4)
