"""The synthetic uploads decode through pneumo.app.pipeline.preprocess; the no-draft path matches it."""

import io

import numpy as np
from PIL import Image

from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.preprocess import to_model_input
from pneumo.bench.preprocessing import decode_without_draft, inputs


def test_inputs_decode_at_two_megapixels():
    files = inputs((340, 240))  # small for speed; the benchmark uses 1700 x 1200
    for name, fmt in (("jpeg_8bit", "JPEG"), ("png_16bit", "PNG"), ("dicom_16bit", "DICOM")):
        d = decode_image(files[name])
        assert d.format == fmt and d.original_size == (340, 240)
    assert decode_image(files["png_16bit"]).bit_depth == 16
    assert Image.open(io.BytesIO(files["png_16bit"])).mode.startswith("I")


def test_no_draft_decodes_full_size_and_agrees():
    data = inputs()["jpeg_8bit"]
    full = decode_without_draft(data)
    draft = decode_image(data)
    assert full.gray.size == (1700, 1200)
    assert draft.gray.size[0] < 1700  # reduced-scale decode
    a, b = to_model_input(full.gray, 224), to_model_input(draft.gray, 224)
    assert a.shape == b.shape == (224, 224, 1)
    assert float(np.mean(np.abs(a - b))) < 0.05  # same picture, small resampling differences
