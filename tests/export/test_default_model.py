"""The committed default model: small, self-describing, and sensible on real X-rays."""

import numpy as np
import pytest
from tinydata import fixture_images

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel
from pneumo.app.pipeline.preprocess import preprocess_path


@pytest.fixture(scope="module")
def model():
    assert DEFAULT_MODEL.exists(), f"the bundled default model is missing: {DEFAULT_MODEL}"
    return OnnxModel(DEFAULT_MODEL)


def test_small_and_quantised(model):
    assert DEFAULT_MODEL.stat().st_size <= 5_000_000  # issue 10: bundled int8 model <= 5 MB
    assert model.metadata["precision"] == "int8"
    ops = {n.op_type for n in __import__("onnx").load(str(DEFAULT_MODEL)).graph.node}
    assert "QuantizeLinear" in ops


def test_carries_its_metadata(model):
    meta = model.metadata
    for key in ("name", "version", "created", "git_commit", "input_size", "preprocessing",
                "class_names", "thresholds", "val_metrics", "train_manifest_sha256", "recipe",
                "ood"):
        assert key in meta, key
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert 0 < meta["thresholds"]["screening"] <= meta["thresholds"]["balanced"] < 1
    assert meta["val_metrics"]["balanced"]["auc"] > 0.95
    assert meta["val_metrics"]["screening"]["sensitivity"] >= 0.95
    assert meta["ood"]["val_pass_rate"] >= 0.99
    assert "Intended use" in model.model_card


def test_classifies_real_fixtures_sensibly(model):
    imgs = fixture_images()
    x = {c: np.stack([preprocess_path(p, model.input_size) for p in files])
         for c, files in imgs.items()}
    out = {c: model.run(v) for c, v in x.items()}
    t = model.thresholds["balanced"]
    assert (out["PNEUMONIA"].probability >= t).all()
    assert (out["NORMAL"].probability < t).all()
    for o in out.values():
        assert (model.ood_distance(o.embedding) < model.metadata["ood"]["reject_distance"]).all()
        assert o.cam.shape[1:] == (model.input_size // 16, model.input_size // 16)
