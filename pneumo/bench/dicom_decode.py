"""DICOM decode time per transfer syntax: one real X-ray compressed every way a CR/DX unit may.

The X-ray (a fixture X-ray upscaled to 1700 x 1200 with grain, as in the preprocessing
section) is stored as 12 bits in 16 (8 bits for JPEG baseline, which allows no more) with
Modality DX, then compressed:

- RLE Lossless, with pydicom's own encoder;
- JPEG 2000 (lossless and lossy), with pylibjpeg-openjpeg's encoder through pydicom;
- JPEG baseline, extended (12-bit), lossless SV1, JPEG-LS lossless and near-lossless, with
  dcmtk's `dcmcjpeg` / `dcmcjpls` (Debian package `dcmtk`); without dcmtk these are skipped.

Each file is timed through `pneumo.app.pipeline.decode.decode_image` (the app's whole DICOM path:
header rules, size checks, decode, rescale/window, reduction to 8 bits).
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid

from pneumo.bench.timing import Settings, measure

log = logging.getLogger(__name__)

DX_PRESENTATION = uid.DigitalXRayImageStorageForPresentation

UNCOMPRESSED = uid.ExplicitVRLittleEndian
SYNTAXES: dict[str, str] = {
    "explicit_le": UNCOMPRESSED,
    "rle": uid.RLELossless,
    "jpeg_baseline": uid.JPEGBaseline8Bit,
    "jpeg_extended": uid.JPEGExtended12Bit,
    "jpeg_lossless_sv1": uid.JPEGLosslessSV1,
    "jpeg_ls_lossless": uid.JPEGLSLossless,
    "jpeg_ls_near_lossless": uid.JPEGLSNearLossless,
    "j2k_lossless": uid.JPEG2000Lossless,
    "j2k": uid.JPEG2000,
}
"""Short name -> transfer syntax UID, for every syntax the receiver accepts."""

_DCMTK = {
    "jpeg_baseline": ["dcmcjpeg", "+eb"],
    "jpeg_extended": ["dcmcjpeg", "+ee"],
    "jpeg_lossless_sv1": ["dcmcjpeg", "+e1"],
    "jpeg_ls_lossless": ["dcmcjpls", "+el"],
    "jpeg_ls_near_lossless": ["dcmcjpls", "+en"],
}


class EncoderMissing(RuntimeError):
    """The encoder for a transfer syntax is not installed here (dcmtk for the JPEG family)."""


def xray_dicom(img: Image.Image, *, bits: int = 12, **attrs) -> bytes:
    """A grayscale image as an uncompressed DX DICOM: 12 bits in 16, or 8 bits in 8."""
    from pneumo.app.dicom.samples import encode_dicom

    arr = np.asarray(img.convert("L"), dtype=np.uint16)
    if bits == 8:
        return encode_dicom(arr.astype(np.uint8), bits_stored=8, bits_allocated=8,
                            sop_class=DX_PRESENTATION, **attrs)
    return encode_dicom(arr * 16, bits_stored=12, window=(2048, 4096),
                        sop_class=DX_PRESENTATION, **attrs)


def dcmtk_available() -> bool:
    """True when dcmtk's JPEG and JPEG-LS encoders are on PATH."""
    return bool(shutil.which("dcmcjpeg") and shutil.which("dcmcjpls"))


def compress(data: bytes, name: str) -> bytes:
    """The DICOM file `data` re-encoded in transfer syntax `name` (a key of SYNTAXES)."""
    import pydicom

    if name == "explicit_le":
        return data
    if name in _DCMTK:
        tool = _DCMTK[name]
        if not shutil.which(tool[0]):
            raise EncoderMissing(f"{tool[0]} (dcmtk) is not installed")
        with tempfile.TemporaryDirectory(prefix="pneumo-dcm-") as tmp:
            src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
            src.write_bytes(data)
            subprocess.run([*tool, str(src), str(dst)], check=True, capture_output=True,
                           timeout=120)
            return dst.read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    if name == "rle":
        ds.compress(SYNTAXES[name], encoding_plugin="pydicom")
    elif name == "j2k_lossless":
        ds.compress(SYNTAXES[name], encoding_plugin="pylibjpeg")
    elif name == "j2k":
        ds.compress(SYNTAXES[name], encoding_plugin="pylibjpeg", j2k_cr=[20])
    else:
        raise KeyError(name)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def variants(img: Image.Image, **attrs) -> dict[str, bytes | str]:
    """Every transfer syntax of SYNTAXES: the file's bytes, or why it could not be made."""
    sixteen, eight = xray_dicom(img, **attrs), xray_dicom(img, bits=8, **attrs)
    out: dict[str, bytes | str] = {}
    for name in SYNTAXES:
        try:
            out[name] = compress(eight if name == "jpeg_baseline" else sixteen, name)
        except EncoderMissing as exc:
            out[name] = str(exc)
    return out


def run(settings: Settings, size: tuple[int, int] | None = None) -> dict:
    """Time `decode_image` on the X-ray in each transfer syntax."""
    from pneumo.app.pipeline.decode import decode_image
    from pneumo.bench.preprocessing import SIZE_2MP, base_image

    size = size or SIZE_2MP
    files = variants(base_image(size))
    rows, skipped = [], {}
    for name, data in files.items():
        if isinstance(data, str):
            skipped[name] = data
            log.info("  %-22s skipped: %s", name, data)
            continue
        decoded = decode_image(data)
        stats = measure(lambda d=data: decode_image(d), settings)
        log.info("  %-22s %6.2f MB: decode %7.2f ms (decoded at %s)", name, len(data) / 1e6,
                 stats.p50, decoded.gray.size)
        rows.append({"syntax": name, "uid": SYNTAXES[name], "bytes": len(data),
                     "pixels": list(size), "decode": stats.to_dict()})
    notes = [f"Input: fixture X-ray upscaled to {size[0]}x{size[1]} with sigma-3 grain, DX, "
             "12 bits stored (8 for JPEG baseline); decode = pneumo.app.pipeline.decode.decode_image "
             "(header rules, decode, window, reduction to 8 bits)."]
    if skipped:
        notes.append("skipped (encoder missing): " + ", ".join(sorted(skipped)))
    return {"status": "ok", "rows": rows, "skipped": skipped, "notes": notes}
