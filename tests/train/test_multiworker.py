"""Training on two workers and on two devices, for real, on tiny data.

- `pneumo train --strategy multiworker`: two worker processes on loopback (TF_CONFIG), the same
  command and run folder: both finish, their weights are equal after training, only the chief
  writes the run folder (the other worker a scratch copy), and the model loads and predicts.
- `--backend jax --strategy mirrored`: keras.distribution.DataParallel over two CPU devices
  (XLA_FLAGS=--xla_force_host_platform_device_count=2) trains the weights one device trains,
  with validation and external sets whose sizes the devices do not divide.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinydata import make_tiny_kaggle

REPO = Path(__file__).resolve().parents[2]
KEEP_SCRATCH = ("import sys, pneumo.train.multiworker as mw; w = mw.worker_folder; "
                "mw.worker_folder = lambda out: (w(out)[0], None); "  # the test reads it after
                "from pneumo.cli import main; sys.exit(main(sys.argv[1:]))")


def free_ports(n: int) -> list[int]:
    """n free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weights(path: Path) -> list[np.ndarray]:
    """The weights of a saved Keras model (with Keras of this process)."""
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


def quiet_env(**extra: str) -> dict:
    """One thread per process (2 cores here), TensorFlow's info logs off."""
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **extra}


@pytest.mark.slow
def test_two_workers_on_loopback_train_the_same_weights_and_the_chief_writes(tmp_path):
    pytest.importorskip("tensorflow")
    data = make_tiny_kaggle(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in (0, 1):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        cmd = [sys.executable, "-c", KEEP_SCRATCH, "train", "--data", str(data), "--out",
               str(out), "--epochs", "2", "--img-size", "32", "--batch-size", "8", "--seed",
               "3", "--strategy", "multiworker"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=quiet_env(TF_CONFIG=tf_config)))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=540)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(t[-3000:] for t in logs)
    for log in logs:
        assert "strategy KerasMultiWorker with 2 replica(s)" in log, log[-2000:]
        assert "epoch 2/2" in log and "done: best epoch" in log
    assert "not the chief" not in logs[0]
    scratch = Path(re.search(r"this worker writes to (\S+)", logs[1]).group(1))
    try:
        assert scratch != out and not scratch.is_relative_to(out)
        for f in ("model.keras", "checkpoint.keras", "model.json", "state.json", "split.json"):
            assert (out / f).is_file() and (scratch / f).is_file(), f
        chief_epochs = [r["loss"] for r in json.loads((out / "state.json").read_text())["history"]]
        other_epochs = [r["loss"] for r in json.loads((scratch / "state.json").read_text())[
            "history"]]
        assert chief_epochs == other_epochs  # the same global batches, reduced over workers
        for name in ("checkpoint.keras", "model.keras"):  # trainable and batch-norm statistics
            a, b = weights(out / name), weights(scratch / name)
            assert len(a) == len(b) > 10
            for wa, wb in zip(a, b, strict=True):
                np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-6)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    # the chief's model loads and predicts (here, without any strategy)
    import keras

    from pneumo.train.data import cached_arrays, list_class_folder
    from pneumo.train.keras_data import to_float

    samples = list_class_folder(data / "train")[:6]
    x, _ = cached_arrays(samples, 32, str(tmp_path / "cache"))
    p = keras.models.load_model(out / "model.keras").predict(to_float(x), verbose=0).ravel()
    assert p.shape == (6,) and np.all((p >= 0) & (p <= 1))
    meta = json.loads((out / "model.json").read_text())
    assert meta["epochs_run"] == 2 and set(meta["thresholds"]) == {"balanced", "screening"}


@pytest.mark.slow
def test_jax_data_parallel_over_two_cpu_devices_trains_the_one_device_weights(tmp_path):
    pytest.importorskip("jax")
    data = make_tiny_kaggle(tmp_path / "data", per_class=12)  # 16 training images: even
    ext = make_tiny_kaggle(tmp_path / "ext", per_class=13, seed=9) / "train"
    (sorted((ext / "NORMAL").glob("*.jpeg"))[0]).unlink()  # 25 images: the devices pad them
    env = quiet_env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    runs = {}
    for strategy in ("mirrored", "auto"):
        out = tmp_path / strategy
        cmd = [sys.executable, "-m", "pneumo.cli", "train", "--backend", "jax", "--strategy",
               strategy, "--data", str(data), "--out", str(out), "--epochs", "2",
               "--img-size", "32", "--batch-size", "8", "--seed", "5", "--external-val",
               str(ext)]
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=540)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[strategy] = (out, proc.stderr)
    assert "keras.distribution.DataParallel over 2 devices" in runs["mirrored"][1]
    assert "DataParallel" not in runs["auto"][1]
    meta = {s: json.loads((out / "model.json").read_text()) for s, (out, _) in runs.items()}
    assert meta["mirrored"]["external_val"]["n"] == 25
    assert meta["mirrored"]["external_val"]["ext_auc"] == pytest.approx(
        meta["auto"]["external_val"]["ext_auc"], abs=1e-6)
    # weights compared with Keras on JAX, in a fresh process (this one may run TensorFlow's)
    code = ("import sys, keras, numpy as np; a, b = (keras.models.load_model(p, compile=False)"
            ".get_weights() for p in sys.argv[1:]); "
            "print(max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True)))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "mirrored" / "model.keras"),
                          str(tmp_path / "auto" / "model.keras")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.strip().splitlines()[-1]) < 1e-4
