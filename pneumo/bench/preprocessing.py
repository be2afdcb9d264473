"""Preprocessing cost: decode + resize of realistic uploads through `pneumo.app.pipeline.preprocess`.

Inputs (made from a fixture X-ray upscaled to 1700 x 1200, i.e. 2 megapixels):
an 8-bit grayscale JPEG, a 16-bit grayscale PNG and an uncompressed 16-bit DICOM.
Each is timed through `pneumo.app.pipeline.preprocess` (decode_image, to_model_input, preprocess_bytes);
the JPEG also through a copy of the same steps without Pillow's reduced-scale (draft)
decoding, to show what draft mode saves.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from pneumo.bench.models import FIXTURE_XRAYS
from pneumo.bench.timing import Settings, measure, ratio

if TYPE_CHECKING:
    from pneumo.app.pipeline.decoded import DecodedImage

log = logging.getLogger(__name__)

SIZE_2MP = (1700, 1200)


def base_image(size: tuple[int, int] = SIZE_2MP, grain: float = 3.0) -> Image.Image:
    """A real fixture X-ray (or a synthetic gradient) upscaled bicubic to `size`, mode L.

    Gaussian grain (sigma `grain` grey levels, fixed seed) is added so the file compresses
    like a real detector image rather than like a smooth upscale.
    """
    files = sorted(FIXTURE_XRAYS.glob("*/*.jpeg"))
    if files:
        img = Image.open(files[0]).convert("L")
    else:
        yy, xx = np.mgrid[0:224, 0:224]
        img = Image.fromarray(((xx + yy) % 256).astype(np.uint8), mode="L")
    img = img.resize(size, Image.BICUBIC)
    if grain > 0:
        noise = np.random.default_rng(0).normal(0.0, grain, (size[1], size[0]))
        arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    return img


def make_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """8-bit grayscale JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_png16(img: Image.Image) -> bytes:
    """16-bit grayscale PNG bytes (8-bit values x 257)."""
    arr = np.asarray(img, dtype=np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(arr.astype("<u2")).save(buf, format="PNG")
    return buf.getvalue()


def make_dicom(img: Image.Image) -> bytes:
    """Uncompressed 12-bit-in-16 MONOCHROME2 DICOM (explicit VR little endian) with a window."""
    from pneumo.app.dicom.samples import encode_dicom

    arr = (np.asarray(img, dtype=np.uint16) * 16).astype(np.uint16)  # 12-bit range
    return encode_dicom(arr, bits_stored=12, slope=1, intercept=0, window=(2048, 4096),
                        patient_name="Benchmark^Synthetic")


def decode_without_draft(data: bytes) -> DecodedImage:
    """`pneumo.app.pipeline.decode.decode_image`'s Pillow path for JPEG, minus the draft() call."""
    from pneumo.app.pipeline import decode, decoded

    img = Image.open(io.BytesIO(data))
    width, height = img.size
    img = ImageOps.exif_transpose(img)
    img.load()
    gray, colour, depth = decode._pil_to_gray(img)
    return decoded.DecodedImage(gray=gray, format="JPEG", original_size=(width, height),
                                colorfulness=colour, bit_depth=depth)


def inputs(size: tuple[int, int] = SIZE_2MP) -> dict[str, bytes]:
    """The three upload files, by name."""
    img = base_image(size)
    return {"jpeg_8bit": make_jpeg(img), "png_16bit": make_png16(img), "dicom_16bit": make_dicom(img)}


def run(model_size: int, settings: Settings, save_inputs: Path | None = None) -> dict:
    """Time decode, resize and the whole of preprocessing for each input."""
    from pneumo.app.pipeline import decode as decoding
    from pneumo.app.pipeline import preprocess

    files = inputs()
    if save_inputs:
        save_inputs.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (save_inputs / f"{name}.bin").write_bytes(data)
    rows = []
    for name, data in files.items():
        variants: list[tuple[str, Callable]] = [("draft" if name.startswith("jpeg") else "default",
                                                 lambda d=data: decoding.decode_image(d))]
        if name.startswith("jpeg"):
            variants.append(("no_draft", lambda d=data: decode_without_draft(d)))
        for variant, decode in variants:
            decoded = decode()
            dec = measure(decode, settings)
            rsz = measure(lambda g=decoded.gray: preprocess.to_model_input(g, model_size), settings)
            tot = measure(lambda dec_fn=decode: preprocess.to_model_input(dec_fn().gray, model_size),
                          settings)
            log.info(f"  {name:12s} {variant:8s}: decode {dec.p50:7.2f} ms, resize {rsz.p50:6.2f} ms, "
                     f"total {tot.p50:7.2f} ms (decoded at {decoded.gray.size})")
            rows.append({"input": name, "variant": variant, "bytes": len(data),
                         "pixels": SIZE_2MP, "decoded_size": list(decoded.gray.size),
                         "model_size": model_size, "decode": dec.to_dict(),
                         "resize": rsz.to_dict(), "total": tot.to_dict()})
    by = {(r["input"], r["variant"]): r["total"]["p50"] for r in rows}
    draft_speedup = ratio(by.get(("jpeg_8bit", "no_draft")), by.get(("jpeg_8bit", "draft")))
    return {"status": "ok", "rows": rows, "jpeg_draft_speedup": draft_speedup,
            "notes": [f"Inputs: fixture X-ray upscaled to {SIZE_2MP[0]}x{SIZE_2MP[1]} with sigma-3 "
                      "grain; JPEG q90 grayscale, 16-bit PNG, uncompressed 12-bit-in-16 DICOM with a window.",
                      "'draft' is pneumo.app.pipeline.preprocess as shipped (Pillow reduced-scale JPEG decode); "
                      "'no_draft' replicates the same steps with a full-size decode.",
                      "resize = pneumo.app.pipeline.preprocess.to_model_input (squash to 224, then to the "
                      "model size, scale to float)."]}
