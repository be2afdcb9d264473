"""The CNNs: the project's CAM-ready network and the seed paper's baseline.

Both use the functional API (tf2onnx fails on `Sequential`). The project's network ends in
conv features -> global average pooling -> one sigmoid unit, so a class activation map is
`last_conv @ dense_kernel`; the layer names below are what export looks up.
"""

from __future__ import annotations

import keras
from keras import layers

LAST_CONV = "last_conv"
EMBEDDING = "embedding"
CLASSIFIER = "probability"
ARCHITECTURES = ("cnn", "seed")
DEFAULT_WIDTHS = (32, 64, 128, 192)


def _conv_bn(x, filters: int, *, strides: int = 1, name: str | None = None):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal")(x)
    # momentum 0.9, not Keras' 0.99: moving statistics must keep up on short runs
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU(name=name)(x)


def build_cnn(img_size: int = 192, widths: tuple[int, ...] = DEFAULT_WIDTHS,
              dropout: float = 0.3) -> keras.Model:
    """Project CNN: stride-2 stem, VGG-style BN blocks, GAP, one sigmoid unit."""
    inputs = keras.Input((img_size, img_size, 1), name="image")
    x = _conv_bn(inputs, widths[0] // 2 + 8, strides=2)
    for i, w in enumerate(widths):
        x = _conv_bn(x, w)
        last = i == len(widths) - 1
        x = _conv_bn(x, w, name=LAST_CONV if last else None)
        if not last:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D(name=EMBEDDING)(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name=CLASSIFIER)(x)
    return keras.Model(inputs, outputs, name="pneumo_cnn")


def build_seed(img_size: int = 148) -> keras.Model:
    """The seed paper's small baseline: 2 conv layers, flatten, sigmoid."""
    inputs = keras.Input((img_size, img_size, 1), name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(1, activation="sigmoid", name=CLASSIFIER)(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


def build_model(arch: str, img_size: int, width: float = 1.0) -> keras.Model:
    """Build an architecture by name ('cnn' or 'seed'); `width` scales the CNN's channels."""
    if arch == "cnn":
        widths = tuple(max(8, int(round(w * width / 8)) * 8) for w in DEFAULT_WIDTHS)
        return build_cnn(img_size, widths)
    if arch == "seed":
        return build_seed(img_size)
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
