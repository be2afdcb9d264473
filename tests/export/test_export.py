"""Export of a tiny trained model end to end: convert, check ops, quantise, parity, metadata."""

import json

import numpy as np
import pytest

pytest.importorskip("tf2onnx")

from pneumo.app.pipeline.onnx_model import OnnxModel, read_metadata  # noqa: E402
from pneumo.app.pipeline.preprocess import preprocess_path  # noqa: E402
from pneumo.cli import main  # noqa: E402
from pneumo.export.onnx_export import ExportError, check_ops  # noqa: E402
from pneumo.export.run import ParityError, export_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_kaggle, tiny_run, tmp_path_factory):
    """The session's tiny training run (tests/conftest.py), exported once."""
    data, run = tiny_kaggle, tiny_run
    out = tmp_path_factory.mktemp("export")
    # gates relaxed: an undertrained 2-epoch model has probabilities bunched at the threshold
    parity = export_model(run / "model.keras", data, out, n_calib=24, n_ood_train=40,
                          min_agreement=0.0, max_auc_drop=1.0)
    return data, run, out, parity


def test_both_files_load_with_allowed_ops(tiny):
    _, _, out, _ = tiny
    for name in ("model.fp32.onnx", "model.int8.onnx"):
        ops = check_ops(out / name)
        assert "Conv" in ops
    assert "QuantizeLinear" in check_ops(out / "model.int8.onnx")
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.fp32.onnx").stat().st_size


def test_fp32_matches_keras_on_real_images(tiny):
    import keras

    data, run, out, parity = tiny
    assert parity["fp32_vs_keras_abs_delta_p_max"] < 1e-5
    model = keras.models.load_model(run / "model.keras")
    x = np.stack([preprocess_path(p, 64) for p in sorted((data / "train").rglob("*.jpeg"))[:8]])
    onnx_model = OnnxModel(out / "model.fp32.onnx")
    out_k = np.asarray(model(x, training=False)).ravel()
    res = onnx_model.run(x)
    np.testing.assert_allclose(res.probability, out_k, atol=1e-5)
    # the CAM is in logit units: its mean is the logit of the probability
    logit = np.log(res.probability / (1 - res.probability))
    np.testing.assert_allclose(res.cam.mean(axis=(1, 2)), logit, atol=1e-3)
    assert res.embedding.shape == (8, 192)


def test_metadata_round_trip(tiny):
    _, run, out, _ = tiny
    train_meta = json.loads((run / "model.json").read_text())
    meta, card = read_metadata(out / "model.int8.onnx")
    assert meta["input_size"] == 64 and meta["precision"] == "int8"
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert set(meta["thresholds"]) == {"balanced", "screening"}
    assert meta["train_manifest_sha256"] == train_meta["train_manifest_sha256"]
    assert meta["recipe"]["synthetic_data"] is False
    assert "squashed" in meta["preprocessing"]["recipe"]
    assert meta["ood"]["reject_distance"] > meta["ood"]["warn_distance"] > 0
    assert len(meta["git_commit"]) >= 7
    assert "Intended use" in card and "not a diagnosis" in card
    m = OnnxModel(out / "model.int8.onnx")
    assert m.input_size == 64 and m.version == meta["version"]
    assert m.ood_distance(np.zeros((1, 192))).shape == (1,)


def test_parity_report_written(tiny):
    _, _, out, parity = tiny
    for f in ("parity.md", "parity.json", "parity.png", "MODEL_CARD.md"):
        assert (out / f).stat().st_size > 0
    assert set(parity["metrics"]) == {"keras", "fp32", "int8"}
    assert 0.0 <= parity["int8_vs_fp32_label_agreement"] <= 1.0


def test_parity_gate_fails_loudly(tiny, tmp_path):
    data, run, _, _ = tiny
    with pytest.raises(ParityError, match="parity gates"):
        export_model(run / "model.keras", data, tmp_path, n_calib=16, n_ood_train=20,
                     min_agreement=1.01)


def test_evaluate_accepts_onnx(tiny, tmp_path):
    data, _, out, _ = tiny
    js = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(out / "model.int8.onnx"),
                 "--data", str(data / "train"), "--json", str(js)]) == 0
    assert json.loads(js.read_text())["n"] == 48


def test_check_ops_rejects_random_ops(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("RandomUniformLike", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match="RandomUniformLike"):
        check_ops(path)
