"""MAC counting on graphs with known MAC counts, and the microbenchmark graphs."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pneumo.bench.roofline import (  # noqa: E402
    conv_model,
    count_macs,
    matmul_model,
    traffic_bytes,
)


def _known_graph():
    """Conv 3->8 (3x3, pad 1) on 32x32, grouped Conv 8->8 (group 2, 3x3, stride 2),
    Flatten, MatMul 1800->10, Gemm 10->5 (transB): batch left symbolic."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(f32), "w1"),
        numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(f32), "w2"),
        numpy_helper.from_array(rng.standard_normal((1800, 10)).astype(f32), "w3"),
        numpy_helper.from_array(rng.standard_normal((5, 10)).astype(f32), "w4"),
        numpy_helper.from_array(np.zeros(5, f32), "b4"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2],
                         group=2),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["m"]),
        helper.make_node("Gemm", ["m", "w4", "b4"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "known",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_count_macs_known_graph(tmp_path):
    conv1 = 32 * 32 * 8 * (3 * 3 * 3)  # out_h*out_w*out_c * k_h*k_w*in_c
    conv2 = 15 * 15 * 8 * (3 * 3 * 8 // 2)  # grouped: in_c / group
    matmul = 1800 * 10
    gemm = 10 * 5
    model = _known_graph()
    res = count_macs(model)
    assert res["macs_per_image"] == conv1 + conv2 + matmul + gemm
    assert [n["macs"] for n in res["nodes"]] == [conv1, conv2, matmul, gemm]
    assert res["uncounted"] == []
    path = tmp_path / "known.onnx"
    onnx.save(model, str(path))
    assert count_macs(path)["macs_per_image"] == conv1 + conv2 + matmul + gemm


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_microbenchmark_graphs_count_and_run(precision):
    ort = pytest.importorskip("onnxruntime")
    conv = conv_model(precision, channels=16, hw=8, layers=3)
    assert count_macs(conv)["macs_per_image"] == 3 * 8 * 8 * 16 * 16 * 9
    mm = matmul_model(precision, m=4, k=32, layers=2)
    assert count_macs(mm)["macs_per_image"] == 2 * 4 * 32 * 32
    for model, shape in ((conv, (1, 16, 8, 8)), (mm, (4, 32))):
        onnx.checker.check_model(model)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"x": np.ones(shape, np.float32)})
        assert y.shape == shape


def test_int8_graph_moves_fewer_bytes():
    fp32 = traffic_bytes(conv_model("fp32", channels=16, hw=8, layers=2))
    int8 = traffic_bytes(conv_model("int8", channels=16, hw=8, layers=2))
    assert 0 < int8 < fp32
