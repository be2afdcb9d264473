"""Keras -> ONNX (tf2onnx) with the app's extra outputs, checked op by op and number by number."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_app.model import INPUT_NAME

OPSET = 17

# Every op type a correct export of our CNNs may contain (fp32 and QDQ int8). Anything else,
# e.g. the StatelessRandomUniformV2 of a Keras augmentation layer, means a broken export.
ALLOWED_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "MaxPool", "GlobalAveragePool", "ReduceMean", "ReduceSum",
    "MatMul", "Gemm", "Add", "Mul", "Sub", "Div", "Sigmoid", "Reshape", "Flatten",
    "Transpose", "Squeeze", "Unsqueeze", "Identity", "Shape", "Gather", "Concat", "Cast",
    "Slice", "Constant", "Einsum",
    "QuantizeLinear", "DequantizeLinear",
})


class ExportError(RuntimeError):
    """The export produced something we must not ship."""


def serving_function(model):
    """A tf.function image -> {probability, cam, embedding} calling the model in inference mode."""
    import keras
    import tensorflow as tf

    from train.model import CLASSIFIER, LAST_CONV

    size = int(model.input_shape[1])
    spec = tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)
    names = {layer.name for layer in model.layers}
    if LAST_CONV not in names:  # e.g. the seed baseline: probability only

        @tf.function(input_signature=[spec])
        def serve_plain(image):
            return {"probability": model(image, training=False)}

        return serve_plain, spec

    features = keras.Model(model.inputs, [model.get_layer(LAST_CONV).output, model.output])
    dense = model.get_layer(CLASSIFIER)
    kernel = np.asarray(dense.kernel, dtype=np.float32)[:, 0]
    bias = np.float32(np.asarray(dense.bias)[0])

    @tf.function(input_signature=[spec])
    def serve(image):
        feat, prob = features(image, training=False)
        # constants made inside the function are folded into the graph, not captured inputs
        cam = tf.reduce_sum(feat * tf.constant(kernel), axis=-1) + tf.constant(bias)
        return {"probability": prob, "cam": cam, "embedding": tf.reduce_mean(feat, axis=[1, 2])}

    return serve, spec


def convert(model, out_path: str | Path) -> Path:
    """Convert a Keras model to ONNX with named outputs and a dynamic batch dimension."""
    import onnx
    import tf2onnx

    serve, spec = serving_function(model)
    concrete = serve.get_concrete_function()
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
    # tf2onnx names outputs after the function's flattened outputs; give them stable names.
    keys = sorted(concrete.structured_outputs)  # TF flattens dict outputs in sorted key order
    if len(proto.graph.output) != len(keys):
        raise ExportError(f"expected outputs {keys}, got {[o.name for o in proto.graph.output]}")
    rename = {o.name: k for o, k in zip(proto.graph.output, keys, strict=True)}
    for node in proto.graph.node:
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.input[:] = [rename.get(n, n) for n in node.input]
    for o in proto.graph.output:
        o.name = rename[o.name]
    onnx.checker.check_model(proto)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out_path))
    return out_path


def check_ops(path: str | Path) -> set[str]:
    """The model's op types; raises ExportError if any is outside ALLOWED_OPS."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    bad = ops - ALLOWED_OPS
    if bad:
        raise ExportError(f"{path} contains op types that must not be shipped: {sorted(bad)}")
    return ops


def check_matches_keras(model, onnx_path: str | Path, images: np.ndarray, tol: float = 1e-5
                        ) -> float:
    """Max |p_keras - p_onnx| on real images; raises ExportError above `tol`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    p_onnx = sess.run(["probability"], {INPUT_NAME: images.astype(np.float32)})[0].ravel()
    p_keras = np.asarray(model(images.astype(np.float32), training=False)).ravel()
    delta = float(np.max(np.abs(p_onnx - p_keras)))
    if delta > tol:
        raise ExportError(f"ONNX and Keras disagree by {delta:.2e} (> {tol:.0e}) on real images")
    return delta
