"""pneumo/train/evaluate.py on its own: the shipped ONNX model judged on the six fixture X-rays."""

import json
import shutil

import numpy as np
import pytest
from tinydata import FIXTURES

from pneumo.train.data import CLASS_NAMES, list_class_folder
from pneumo.train.evaluate import (
    Evaluation,
    evaluate,
    load_predictor,
    resolve_eval_samples,
)
from pneumo.train.evaluate_cli import evaluate_cli
from pneumo.train.shifts import SHIFTS


@pytest.fixture(scope="module")
def onnx_predictor(test_model_path):
    return load_predictor(test_model_path)


def test_load_predictor_gives_probabilities_and_metadata(onnx_predictor):
    predict, meta = onnx_predictor
    size = int(meta["input_size"])
    p = predict(np.full((3, size, size, 1), 0.5, dtype=np.float32))
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    assert set(meta["thresholds"]) >= {"balanced", "screening"}


def test_load_predictor_needs_model_json_beside_a_keras_file(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_predictor(tmp_path / "model.keras")


def test_evaluate_on_the_fixtures(onnx_predictor):
    predict, meta = onnx_predictor
    samples = list_class_folder(FIXTURES)
    res = evaluate(predict, meta, samples, n_boot=20, shifts=True)
    assert isinstance(res, Evaluation)
    assert res.n == 6 and res.n_per_class == {"NORMAL": 3, "PNEUMONIA": 3}
    assert list(res.labels) == [s.label for s in samples]
    assert res.probabilities.shape == (6,)
    assert set(res.operating_points) == set(meta["thresholds"])
    for mode, m in res.operating_points.items():
        assert m["threshold"] == pytest.approx(float(meta["thresholds"][mode]))
        assert m["tp"] + m["fn"] == 3 and m["tn"] + m["fp"] == 3
        assert m["tp"] == int(np.sum(res.probabilities[res.labels == 1] >= m["threshold"]))
        assert set(m["ci95"]) >= {"accuracy", "sensitivity", "specificity"}
    assert set(res.acquisition_shifts) == set(SHIFTS)
    assert res.model["name"] == meta["name"]


def test_evaluation_json_has_no_per_image_arrays(onnx_predictor):
    predict, meta = onnx_predictor
    res = evaluate(predict, meta, list_class_folder(FIXTURES), n_boot=10)
    res.data, res.label = "fixtures", "fixture set"
    res.external = evaluate(predict, meta, list_class_folder(FIXTURES), n_boot=10)
    doc = json.loads(json.dumps(res.to_json()))
    assert list(doc) == ["model", "n", "n_per_class", "operating_points", "data", "label",
                         "external"]
    assert doc["external"]["n"] == 6 and "label" not in doc["external"]
    assert "acquisition_shifts" not in doc


def test_resolve_eval_samples(tmp_path):
    for split in ("train", "test"):
        for cls in CLASS_NAMES:
            shutil.copytree(FIXTURES / cls, tmp_path / "kaggle" / split / cls)
    samples, source = resolve_eval_samples(tmp_path / "model.onnx", tmp_path / "kaggle")
    assert source.endswith("test") and len(samples) == 6  # 'auto' takes test/
    samples, source = resolve_eval_samples(tmp_path / "m.onnx", tmp_path / "kaggle" / "train")
    assert len(samples) == 6  # a class folder is taken whole
    with pytest.raises(FileNotFoundError, match="no val/ folder"):
        resolve_eval_samples(tmp_path / "model.onnx", tmp_path / "kaggle", "val")


def test_evaluate_cli_refuses_an_empty_folder(test_model_path, tmp_path):
    # (the full command on the shipped model is tests/pneumo/test_pneumo_cli.py)
    (tmp_path / "NORMAL").mkdir()
    assert evaluate_cli(str(test_model_path), str(tmp_path)) == 2
