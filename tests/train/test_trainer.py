"""A real (tiny) training run end to end: train, resume, determinism, evaluate, report."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

from pneumo.cli import main  # noqa: E402
from pneumo.train.trainer import TrainConfig, train  # noqa: E402

# tiny_run (2 epochs, 64 px) and tiny_kaggle are session fixtures of tests/conftest.py.


@pytest.fixture
def tiny_data(tiny_kaggle):
    return tiny_kaggle


def test_run_folder_and_metadata(tiny_run):
    for f in ("model.keras", "model.json", "split.json", "state.json", "checkpoint.keras",
              "history.csv", "config.json"):
        assert (tiny_run / f).exists(), f
    meta = json.loads((tiny_run / "model.json").read_text())
    assert meta["input_size"] == 64
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert set(meta["thresholds"]) == {"balanced", "screening"}
    assert 0 <= meta["thresholds"]["balanced"] <= 1
    assert meta["val_metrics"]["screening"]["sensitivity"] >= 0.95
    assert len(meta["train_manifest_sha256"]) == 64
    assert meta["recipe"]["augmentation"] == "full"
    assert json.loads((tiny_run / "state.json").read_text())["epoch"] == 2


def test_resume_continues_where_it_stopped(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays as it is
    before = json.loads((run / "state.json").read_text())["history"]
    rc = main(["train", "--data", "unused-on-resume", "--out", str(run), "--epochs", "3",
               "--img-size", "64"])
    assert rc == 0
    after = json.loads((run / "state.json").read_text())["history"]
    assert len(after) == 3 and after[:2] == before


def test_init_from_starts_at_another_input_size(tiny_run, tiny_data, tmp_path):
    import keras
    import numpy as np

    out = tmp_path / "ft"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                 "--img-size", "48", "--lr", "0", "--weight-decay", "0",
                 "--init-from", str(tiny_run)]) == 0
    src = keras.models.load_model(tiny_run / "model.keras")
    ft = keras.models.load_model(out / "model.keras")
    assert ft.input_shape[1] == 48 and src.input_shape[1] == 64
    conv = [w for w in src.get_weights() if w.ndim == 4]
    # learning rate 0: the convolutions are the source's (batch-norm statistics adapt)
    for a, b in zip(conv, [w for w in ft.get_weights() if w.ndim == 4], strict=True):
        np.testing.assert_array_equal(a, b)
    recipe = json.loads((out / "model.json").read_text())["recipe"]
    assert recipe["init_from"]["path"] == str(tiny_run / "model.keras")
    assert len(recipe["init_from"]["sha256"]) == 64
    assert recipe["init_from"]["version"].endswith("cnn64-s3")


def test_external_validation_is_never_extra_training_data(tiny_data, tmp_path):
    ext = tmp_path / "external_val"
    shutil.copytree(tiny_data / "train", ext)
    with pytest.raises(ValueError, match="never be used as synthetic training images"):
        train(TrainConfig(data=str(tiny_data), out=str(tmp_path / "run"), epochs=1,
                          img_size=32, synthetic=str(ext)))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_init_from_refuses_another_architecture(tiny_run, tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit, match="do not match"):
        main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "w"), "--epochs", "1",
              "--img-size", "48", "--width", "0.5", "--init-from", str(tiny_run)])
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "m"), "--epochs",
                 "1", "--img-size", "48", "--init-from", str(tmp_path / "nothing")]) == 2
    assert "--init-from: no model at" in capsys.readouterr().err


@pytest.mark.slow
def test_same_seed_same_training(tiny_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = TrainConfig(data=str(tiny_data), out=str(tmp_path / name), epochs=1, img_size=48,
                          batch_size=16, seed=5)
        train(cfg)
        h = json.loads((tmp_path / name / "state.json").read_text())["history"][0]
        runs.append((h["loss"], h["val_auc"]))
    assert runs[0] == runs[1]


def test_seed_architecture_trains(tiny_data, tmp_path):
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path), "--epochs", "1",
                 "--arch", "seed", "--img-size", "48", "--augment", "seed"]) == 0
    assert json.loads((tmp_path / "model.json").read_text())["arch"] == "seed"


def test_evaluate_writes_metrics_and_report(tiny_run, tiny_data, tmp_path, capsys):
    js, rep = tmp_path / "m.json", tmp_path / "report"
    assert main(["evaluate", "--model", str(tiny_run / "model.keras"), "--data", str(tiny_data),
                 "--json", str(js), "--report", str(rep), "--shifts"]) == 0
    res = json.loads(js.read_text())
    split = json.loads((tiny_run / "split.json").read_text())
    assert res["n"] == len(split["val"])  # no test/ folder: the run's own validation split
    for mode in ("balanced", "screening"):
        m = res["operating_points"][mode]
        assert 0 <= m["accuracy"] <= 1 and m["ci95"]["accuracy"][0] <= m["accuracy"]
    for f in ("report.md", "roc.png", "confusion.png", "calibration.png", "training_curves.png"):
        assert (rep / f).stat().st_size > 0, f
    assert set(res["acquisition_shifts"]) >= {"gamma 0.7", "contrast 1.3", "noise 0.03"}
    assert "acquisition shifts" in (rep / "report.md").read_text()
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_on_a_class_folder(tiny_run, tiny_data):
    assert main(["evaluate", "--model", str(tiny_run / "model.keras"),
                 "--data", str(tiny_data / "train")]) == 0


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tiny_data, tmp_path):
    code = textwrap.dedent(f"""
        import tensorflow as tf
        from pneumo.app.runtime.logs import setup_logging
        setup_logging()  # progress to stderr, as the pneumo command does
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from pneumo.train.trainer import TrainConfig, make_strategy, train
        s = make_strategy("mirrored")
        assert s.num_replicas_in_sync == 2, s.num_replicas_in_sync
        meta = train(TrainConfig(data={str(tiny_data)!r}, out={str(tmp_path)!r}, epochs=1,
                                 img_size=48, batch_size=16, strategy="mirrored"))
        print("REPLICAS", s.num_replicas_in_sync, "AUC", meta["val_metrics"]["balanced"]["auc"])
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "REPLICAS 2" in res.stdout
    assert "2 replica(s)" in res.stderr
