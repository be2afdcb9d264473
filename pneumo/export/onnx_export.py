"""Keras -> ONNX (tf2onnx) with the app's extra outputs, checked op by op and number by number."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pneumo.app.pipeline.onnx_model import INPUT_NAME

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

    from pneumo.train.model import CLASSIFIER, LAST_CONV

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


def _cam_parts(model) -> tuple:
    """(last-conv feature model, dense kernel (C,), dense bias) of a CAM-ready CNN."""
    import keras

    from pneumo.train.model import CLASSIFIER, LAST_CONV

    if LAST_CONV not in {layer.name for layer in model.layers}:
        raise ExportError(f"model {model.name!r} has no {LAST_CONV!r} layer: an ensemble needs "
                          "CAM-ready members (--arch cnn)")
    features = keras.Model(model.inputs, model.get_layer(LAST_CONV).output)
    dense = model.get_layer(CLASSIFIER)
    kernel = np.asarray(dense.kernel, dtype=np.float32)[:, 0]
    bias = np.float32(np.asarray(dense.bias)[0])
    return features, kernel, bias


def ensemble_serving_function(models: Sequence):
    """A tf.function image -> {probability, cam, embedding} averaging the members' logits.

    probability = sigmoid(mean of the members' logits); cam = mean of the members' CAMs (its
    spatial mean is that mean logit, since each member is conv -> GAP -> dense); embedding =
    the members' pooled features concatenated. Members need the same input and CAM size.
    """
    import tensorflow as tf

    sizes = [int(m.input_shape[1]) for m in models]
    if len(set(sizes)) != 1:
        raise ExportError(f"ensemble members need one input size, got {sizes}")
    parts = [_cam_parts(m) for m in models]
    cam_sizes = [tuple(int(d) for d in f.output_shape[1:3]) for f, _, _ in parts]
    if len(set(cam_sizes)) != 1:
        raise ExportError(f"ensemble members need one CAM size, got {cam_sizes}")
    spec = tf.TensorSpec([None, sizes[0], sizes[0], 1], tf.float32, name=INPUT_NAME)
    scale = np.float32(1.0 / len(parts))

    @tf.function(input_signature=[spec])
    def serve(image):
        cam, embeddings = None, []
        for features, kernel, bias in parts:
            feat = features(image, training=False)
            member = tf.reduce_sum(feat * tf.constant(kernel), axis=-1) + tf.constant(bias)
            cam = member if cam is None else cam + member  # Add, not AddN (-> ONNX Sum)
            embeddings.append(tf.reduce_mean(feat, axis=[1, 2]))
        cam = cam * tf.constant(scale)
        logit = tf.reshape(tf.reduce_mean(cam, axis=[1, 2]), [-1, 1])
        return {"probability": tf.sigmoid(logit), "cam": cam,
                "embedding": tf.concat(embeddings, axis=-1)}

    return serve, spec


def member_logits(model, images: np.ndarray) -> np.ndarray:
    """A CAM-ready member's logits (pre-sigmoid, float64) from Keras, without logit(p) rounding."""
    import keras

    from pneumo.train.model import EMBEDDING

    _, kernel, bias = _cam_parts(model)
    pooled = keras.Model(model.inputs, model.get_layer(EMBEDDING).output)
    emb = np.asarray(pooled(images.astype(np.float32), training=False), dtype=np.float64)
    return emb @ kernel.astype(np.float64) + float(bias)


def keras_probability(model_or_members, images: np.ndarray) -> np.ndarray:
    """P(PNEUMONIA) from Keras: the model's output, or sigmoid(mean member logit) for a list."""
    if not isinstance(model_or_members, (list, tuple)):
        return np.asarray(model_or_members(images.astype(np.float32), training=False)).ravel()
    if len(model_or_members) == 1:
        return keras_probability(model_or_members[0], images)
    z = np.mean([member_logits(m, images) for m in model_or_members], axis=0)
    return 1.0 / (1.0 + np.exp(-z))


def convert(model, out_path: str | Path) -> Path:
    """Convert a Keras model (or a list of members: one ensemble graph) to ONNX.

    Outputs are named, the batch dimension is dynamic.
    """
    import onnx
    import tf2onnx

    if isinstance(model, (list, tuple)):
        serve, spec = (serving_function(model[0]) if len(model) == 1
                       else ensemble_serving_function(model))
    else:
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
    """Max |p_keras - p_onnx| on real images (model or list of members); ExportError above tol."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    p_onnx = sess.run(["probability"], {INPUT_NAME: images.astype(np.float32)})[0].ravel()
    p_keras = keras_probability(model, images)
    delta = float(np.max(np.abs(p_onnx - p_keras)))
    if delta > tol:
        raise ExportError(f"ONNX and Keras disagree by {delta:.2e} (> {tol:.0e}) on real images")
    return delta
