"""The CNNs: the project's CAM-ready network, cheaper CAM-ready students, the seed baseline.

All use the functional API (tf2onnx fails on `Sequential`). Every CAM-ready network ends in
conv features -> global average pooling -> one sigmoid unit, so a class activation map is
`last_conv @ dense_kernel`; the layer names below are what export looks up.

The students (issue 27) start with a stride-4 stem, so no 3 x 3 block runs at half the input
side (in `cnn` the first block at 112 x 112 with 32 channels is ~30 % of its cost):

- ``stem4``: the `cnn` blocks (two 3 x 3 conv-BN-ReLU, max pooling) from 1/4 of the input;
- ``mobile``: inverted-residual blocks (1 x 1 expand, 3 x 3 depthwise, 1 x 1 project, a skip
  where the shape allows), MobileNetV2's block;
- ``resnet``: basic residual blocks (two 3 x 3 convolutions and a skip; strided first block).
"""

from __future__ import annotations

import keras
from keras import layers

LAST_CONV = "last_conv"
EMBEDDING = "embedding"
CLASSIFIER = "probability"
ARCHITECTURES = ("cnn", "seed", "stem4", "mobile", "resnet")
STUDENTS = ("stem4", "mobile", "resnet")
"""The cheaper CAM-ready architectures (issue 27)."""
DEFAULT_WIDTHS = (32, 64, 128, 192)
STUDENT_WIDTHS = (48, 96, 160)
"""Channels of the student stages at 1/4, 1/8 and 1/16 of the input side."""
STEM_WIDTH = 32


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


def _stem4(inputs, filters: int):
    """Two strided 3 x 3 conv-BN-ReLU: 1/4 of the input side, `filters` channels."""
    x = _conv_bn(inputs, max(8, filters // 2), strides=2)
    return _conv_bn(x, filters, strides=2)


def _head(inputs, x, dropout: float, name: str) -> keras.Model:
    """Global average pooling (the embedding), dropout, one sigmoid unit."""
    x = layers.GlobalAveragePooling2D(name=EMBEDDING)(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name=CLASSIFIER)(x)
    return keras.Model(inputs, outputs, name=name)


def build_stem4(img_size: int = 224, widths: tuple[int, ...] = STUDENT_WIDTHS,
                stem: int = STEM_WIDTH, dropout: float = 0.3) -> keras.Model:
    """Stride-4 stem, then the `cnn` blocks (two 3 x 3 conv-BN-ReLU, max pooling between)."""
    inputs = keras.Input((img_size, img_size, 1), name="image")
    x = _stem4(inputs, stem)
    for i, w in enumerate(widths):
        last = i == len(widths) - 1
        x = _conv_bn(x, w)
        x = _conv_bn(x, w, name=LAST_CONV if last else None)
        if not last:
            x = layers.MaxPooling2D(2)(x)
    return _head(inputs, x, dropout, "pneumo_stem4")


def _inverted_residual(x, filters: int, *, strides: int, expand: int, name: str | None = None):
    """1 x 1 expand -> 3 x 3 depthwise -> 1 x 1 project (linear), a skip when shapes match."""
    c_in = int(x.shape[-1])
    y = _pointwise(x, c_in * expand, relu=True)
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               depthwise_initializer="he_normal")(y)
    y = layers.BatchNormalization(momentum=0.9)(y)
    y = layers.ReLU()(y)
    y = _pointwise(y, filters, relu=False)
    if strides == 1 and c_in == filters:
        y = layers.Add()([x, y])
    return y if name is None else layers.ReLU(name=name)(y)


def _pointwise(x, filters: int, *, relu: bool):
    """1 x 1 conv-BN (and ReLU)."""
    x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x) if relu else x


def build_mobile(img_size: int = 224, widths: tuple[int, ...] = STUDENT_WIDTHS,
                 stem: int = STEM_WIDTH, expand: int = 4, blocks: int = 2,
                 dropout: float = 0.3) -> keras.Model:
    """Stride-4 stem, inverted-residual stages (the first block of a later stage strided).

    The last block ends in a ReLU named ``last_conv`` so that the CAM has the same meaning
    (non-negative features times the dense kernel) as in the other networks.
    """
    inputs = keras.Input((img_size, img_size, 1), name="image")
    x = _stem4(inputs, stem)
    for i, w in enumerate(widths):
        for j in range(blocks):
            last = i == len(widths) - 1 and j == blocks - 1
            x = _inverted_residual(x, w, strides=2 if (i and not j) else 1, expand=expand,
                                   name=LAST_CONV if last else None)
    return _head(inputs, x, dropout, "pneumo_mobile")


def _basic_block(x, filters: int, *, strides: int, name: str | None = None):
    """Two 3 x 3 conv-BN with a skip (1 x 1 strided projection when the shape changes)."""
    y = _conv_bn(x, filters, strides=strides)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal")(y)
    y = layers.BatchNormalization(momentum=0.9)(y)
    if strides != 1 or int(x.shape[-1]) != filters:
        x = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                          kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU(name=name)(layers.Add()([x, y]))


def build_resnet(img_size: int = 224, widths: tuple[int, ...] = STUDENT_WIDTHS,
                 stem: int = STEM_WIDTH, dropout: float = 0.3) -> keras.Model:
    """Stride-4 stem, one basic residual block per stage (strided from the second stage)."""
    inputs = keras.Input((img_size, img_size, 1), name="image")
    x = _stem4(inputs, stem)
    for i, w in enumerate(widths):
        x = _basic_block(x, w, strides=2 if i else 1,
                         name=LAST_CONV if i == len(widths) - 1 else None)
    return _head(inputs, x, dropout, "pneumo_resnet")


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


def _scaled(widths: tuple[int, ...], width: float) -> tuple[int, ...]:
    """Channel counts times `width`, in multiples of 8 (at least 8)."""
    return tuple(max(8, int(round(w * width / 8)) * 8) for w in widths)


def build_model(arch: str, img_size: int, width: float = 1.0) -> keras.Model:
    """Build an architecture by name (ARCHITECTURES); `width` scales the channels."""
    if arch == "cnn":
        return build_cnn(img_size, _scaled(DEFAULT_WIDTHS, width))
    if arch == "seed":
        return build_seed(img_size)
    students = {"stem4": build_stem4, "mobile": build_mobile, "resnet": build_resnet}
    if arch in students:
        return students[arch](img_size, _scaled(STUDENT_WIDTHS, width),
                              stem=_scaled((STEM_WIDTH,), width)[0])
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
