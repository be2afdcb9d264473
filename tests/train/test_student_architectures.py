"""Issue 27: the cheaper CAM-ready architectures build, export to ONNX with their CAM and
embedding, and round-trip in ONNX Runtime with the numbers Keras gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("tf2onnx")

from pneumo.app.pipeline.onnx_model import OUTPUTS  # noqa: E402
from pneumo.bench.model_latency import ort_session  # noqa: E402
from pneumo.bench.models import fixture_images  # noqa: E402
from pneumo.bench.roofline import count_macs  # noqa: E402
from pneumo.export.onnx_export import check_matches_keras, check_ops, convert  # noqa: E402
from pneumo.train.config import IMG_SIZE, TrainConfig  # noqa: E402
from pneumo.train.model import (  # noqa: E402
    ARCHITECTURES,
    EMBEDDING,
    LAST_CONV,
    STUDENTS,
    build_model,
)

SIZE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each student at 64 px, exported to fp32 ONNX."""
    tmp = tmp_path_factory.mktemp("students")
    out = {}
    for arch in STUDENTS:
        model = build_model(arch, SIZE)
        out[arch] = (model, convert(model, tmp / f"{arch}.onnx"))
    return out


@pytest.mark.parametrize("arch", STUDENTS)
def test_a_student_is_cam_ready_with_no_3x3_block_at_half_the_input_side(arch):
    model = build_model(arch, SIZE)
    names = {layer.name for layer in model.layers}
    assert {LAST_CONV, EMBEDDING} <= names
    assert model.get_layer(LAST_CONV).output.shape[1] == SIZE // 16  # stride 4, then 2 x 2
    for layer in model.layers:  # only the stem's first, strided conv sees more than 1/4 side
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D") and layer.kernel_size == (3, 3):
            in_side = layer.input.shape[1]
            assert in_side <= SIZE // 4 or (in_side == SIZE and layer.strides == (2, 2)) or (
                in_side == SIZE // 2 and layer.strides == (2, 2)), (arch, layer.name)


@pytest.mark.parametrize("arch", STUDENTS)
def test_a_student_exports_with_cam_and_embedding_and_matches_keras(exported, arch):
    model, path = exported[arch]
    check_ops(path)
    x = fixture_images(SIZE, 4)
    check_matches_keras(model, path, x)
    sess = ort_session(path, 1)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}),
                   strict=True))
    assert set(got) == set(OUTPUTS)
    assert got["probability"].shape == (4, 1)
    assert got["cam"].shape == (4, SIZE // 16, SIZE // 16)
    assert got["embedding"].shape == (4, model.get_layer(LAST_CONV).output.shape[-1])
    # the CAM is last_conv @ dense kernel + bias: its mean is the logit of the probability
    logit = np.log(got["probability"][:, 0] / (1 - got["probability"][:, 0]))
    assert np.allclose(got["cam"].mean(axis=(1, 2)), logit, atol=1e-3)


def test_students_cost_under_a_quarter_of_the_pairs_macs(exported, tmp_path):
    """The pair is two `cnn` members: a student must do with fewer than a quarter of that."""
    cnn = count_macs(convert(build_model("cnn", SIZE), tmp_path / "cnn.onnx"))["macs_per_image"]
    for arch, (_, path) in exported.items():
        assert count_macs(path)["macs_per_image"] < 2 * cnn / 4, arch


def test_the_train_options_name_every_architecture():
    """config.py is standard library only, so it lists the names itself: they must agree."""
    arch = next(f for f in dataclasses.fields(TrainConfig) if f.name == "arch")
    assert tuple(arch.metadata["choices"]) == ARCHITECTURES
    assert set(IMG_SIZE) == set(ARCHITECTURES)


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vit", SIZE)
