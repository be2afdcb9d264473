"""Static int8 quantisation (QDQ, per-channel) with ONNX Runtime, calibrated on real images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pneumo.app.pipeline.onnx_model import INPUT_NAME


class _ArrayReader:
    """CalibrationDataReader over preprocessed images, in small batches."""

    def __init__(self, images: np.ndarray, batch: int = 16):
        self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        b = next(self._batches, None)
        return None if b is None else {INPUT_NAME: b.astype(np.float32)}


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calib_images: np.ndarray) -> Path:
    """ORT pre-processing, then static QDQ quantisation of the convolutions: 7-bit int8 weights per channel, uint8 activations."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8_path = Path(int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        quantize_static(
            str(pre),
            str(int8_path),
            _ArrayReader(calib_images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: on x86 CPUs without VNNI (most clinic laptops: AVX2 only), ORT's
            # u8 x s8 kernels add pairs of products in 16 bits, which saturates with 8-bit
            # weights and turned normal X-rays into p = 1.0. 7 bits cannot saturate.
            reduce_range=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # Only the convolutions (and max pooling between them) run in int8: they are
            # nearly all the compute. Quantising the head too put the output probability on
            # a 1/255 grid, and the many images near p = 1 then tied: external AUC fell from
            # 0.976 (fp32) to 0.964 for the 224 px ensemble, and stayed 0.964 with the convs
            # left in fp32. With the head in fp32 the int8 file scores 0.976 at the same speed.
            op_types_to_quantize=["Conv", "MaxPool"],
        )
    return int8_path
