"""Model latency and roofline sections on a tiny ONNX file, with TensorFlow switched off."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pneumo.bench import model_latency, models, roofline  # noqa: E402
from pneumo.bench.timing import Settings  # noqa: E402

TINY = Settings(warmup=1, repeat=3, min_repeat=2, max_seconds=0.05)


def _tiny_onnx(path, size=16):
    """image [N, S, S, 1] -> NCHW -> Conv 1->4 -> GAP -> Flatten -> MatMul 4->1 -> Sigmoid."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "d"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "d")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def no_tf_models(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "tensorflow_available", lambda: False)
    export = tmp_path / "export"
    export.mkdir()
    _tiny_onnx(export / "model.fp32.onnx")
    return models.prepare_models(tmp_path / "work", export_dir=export)


def test_without_tensorflow_only_existing_onnx(no_tf_models):
    ms = no_tf_models
    assert not ms.tensorflow and ms.keras == []
    keys = [e.key for e in ms.onnx]
    assert keys[0] == "model-fp32" and "seed-fp32" not in keys
    assert ms.onnx[0].input_size == 16 and ms.onnx[0].arch == "unknown"  # no pneumo metadata
    assert any("TensorFlow" in n for n in ms.notes)
    assert any("model.int8.onnx" in n for n in ms.notes)  # missing file noted


def test_latency_and_roofline_sections(no_tf_models):
    ms = no_tf_models
    ms.onnx = [e for e in ms.onnx if e.key == "model-fp32"]  # not the shipped model
    cfg = model_latency.LatencyConfig(batches=(1, 2), threads=(1,), settings=TINY)
    lat = model_latency.run(ms, cfg)
    assert lat["status"] == "ok" and len(lat["rows"]) == 2
    row = lat["rows"][1]
    assert row["id"] == "model-fp32|onnxruntime|b2|t1" and row["batch"] == 2
    assert row["stats"]["n"] >= 2 and row["per_image_ms"] == pytest.approx(row["stats"]["p50"] / 2)
    roof = roofline.run(ms, lat, (1,), TINY, small=True)
    macs = 16 * 16 * 4 * 9 + 4
    assert roof["models"]["model-fp32"]["macs_per_image"] == macs
    assert len(roof["rows"]) == 2
    r = roof["rows"][1]
    assert r["achieved_gmacs"] == pytest.approx(macs * 2 / (row["stats"]["p50"] / 1000) / 1e9)
    assert r["efficiency"] == pytest.approx(r["achieved_gmacs"] / r["attainable_gmacs"])


def test_speedup_ratios_from_rows():
    def row(model, runtime, batch, threads, p50):
        return {"id": model_latency.row_id(model, runtime, batch, threads), "label": model,
                "runtime": runtime, "batch": batch, "threads": threads, "stats": {"p50": p50}}

    rows = [row("model-keras", "keras.predict", 1, "tf", 40.0),
            row("model-int8", "onnxruntime", 1, 1, 2.0),
            row("model-fp32", "onnxruntime", 1, 1, 6.0)]
    sp = {(s["baseline"], s["candidate"]): s["speedup"]
          for s in model_latency.speedups(rows, (1,), (1,))}
    assert sp[("model-keras|keras.predict|b1|ttf", "model-int8|onnxruntime|b1|t1")] == 20.0
    assert sp[("model-fp32|onnxruntime|b1|t1", "model-int8|onnxruntime|b1|t1")] == 3.0
    assert sp[("model-keras|keras.predict|b1|ttf", "model-fp32|onnxruntime|b1|t1")] == \
        pytest.approx(40 / 6)
