"""Any input image -> 8-bit grayscale (`decode_image`): the format read from the bytes,
JPEG/PNG/BMP/TIFF through Pillow (EXIF orientation, 16-bit, palette, alpha), DICOM through
pneumo.app.pipeline.dicom_decode; memory bounded (pneumo.app.pipeline.memory)."""

import io
import math
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumo.app.config import DEFAULT_MAX_PIXELS
from pneumo.app.pipeline.decoded import (
    DATASET_SIZE,
    N_,
    DecodedImage,
    Finding,
    ImageError,
    ImageTooLarge,
    NotAChestXray,
    UnsupportedImage,
    colorfulness,
)
from pneumo.app.pipeline.dicom_decode import decode_dicom
from pneumo.app.pipeline.memory import BAND_BYTES, DecodeGate, hold, reduce_factor, to_uint8

_MAGIC = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
]


def sniff_format(data: bytes) -> str | None:
    """Name the file type from its first bytes (never from its file name)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if _looks_like_bare_dicom(data):
        return "DICOM"
    return None


def _looks_like_bare_dicom(data: bytes) -> bool:
    """A DICOM data set written without the 128-byte preamble and 'DICM' (older devices).

    It starts with a little-endian tag of group 0x0002 (file meta) or 0x0008 (identifying),
    followed by an explicit VR (two capital letters) or an implicit 4-byte length.
    """
    if len(data) < 12 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return int.from_bytes(data[4:8], "little") < 1024


SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "DICOM")


# --- Pillow formats ------------------------------------------------------------------------

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)."""


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of a decoded Pillow image in `mode`."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4



def _working_image(img: Image.Image) -> Image.Image:
    """The image in one of the modes L, RGB, I or F (alpha flattened over black)."""
    mode = img.mode
    if mode in ("L", "RGB", "I", "F"):
        return img
    if mode.startswith("I;16"):
        return img.convert("I")
    if mode == "1":
        return img.convert("L")
    if mode == "LA":
        return _flatten_alpha(img.convert("RGBA")).convert("L")
    if mode in ("P", "PA", "RGBA", "RGBa", "La"):
        return _flatten_alpha(img.convert("RGBA"))
    return img.convert("RGB")


def _pil_to_gray(img: Image.Image, source_mode: str | None = None
                 ) -> tuple[Image.Image, float, int]:
    """Any Pillow image -> (8-bit L image, colourfulness, bit depth of `source_mode`)."""
    source = source_mode or img.mode
    work = _working_image(img)
    if work.mode == "F":
        return Image.fromarray(to_uint8(np.asarray(work)), mode="L"), 0.0, 32
    if work.mode == "I":
        arr = np.asarray(work)
        if source.startswith("I;16") or arr.max(initial=0) > 255:
            return Image.fromarray(to_uint8(arr), mode="L"), 0.0, 16
        return Image.fromarray(arr.astype(np.uint8), mode="L"), 0.0, 8
    if work.mode == "L":
        return work, 0.0, 1 if source == "1" else 8
    return work.convert("L"), colorfulness(work), 8


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    """Composite an RGBA image over black (radiographs have a dark background)."""
    bg = Image.new("RGB", rgba.size, (0, 0, 0))
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg


def _reduce_image(img: Image.Image, f: int) -> Image.Image:
    """The image box-reduced by f, converted to its working mode in row bands (no full copy)."""
    if img.mode in ("L", "RGB", "I", "F"):
        return img.reduce(f)
    w, h = img.size
    step = f * max(1, BAND_BYTES // (4 * w * f))
    out = None
    for y in range(0, h, step):
        small = _working_image(img.crop((0, y, w, min(h, y + step)))).reduce(f)
        if out is None:
            out = Image.new(small.mode, (math.ceil(w / f), math.ceil(h / f)))
        out.paste(small, (0, y // f))
    return out


def _load_gray(img: Image.Image) -> tuple[Image.Image, float, int, int]:
    """Decode an opened image, reduce it first if large, turn it upright, make it 8-bit gray.

    Returns (gray, colourfulness, bit depth, EXIF orientation).
    """
    img.load()
    orientation = img.getexif().get(0x0112, 1)  # after load: PNG may keep EXIF after the pixels
    source = img.mode
    f = reduce_factor(*img.size)
    if f == 1:
        return *_pil_to_gray(ImageOps.exif_transpose(img), source), orientation
    small = _reduce_image(img, f)
    img.close()  # the full-size pixels are no longer needed
    method = _TRANSPOSE.get(orientation)
    return *_pil_to_gray(small.transpose(method) if method is not None else small,
                         source), orientation


THUMBNAIL_SHARE = 0.25
"""A page or frame with at most this share of the largest one's pixels is a thumbnail."""


def _one_frame(img: Image.Image) -> list[str]:
    """One image per file, whatever the format (multi-frame DICOM has the same rule in its
    header check): a multi-page TIFF whose other pages are thumbnails is read from its
    largest page (noted); any other file with several frames or pages is refused (422)."""
    n = int(getattr(img, "n_frames", 1) or 1)
    if n <= 1:
        return []
    sizes = []
    if img.format == "TIFF":
        for i in range(min(n, 64)):
            img.seek(i)
            sizes.append(img.size[0] * img.size[1])
    largest = max(sizes) if sizes else 0
    full = [i for i, a in enumerate(sizes) if a > THUMBNAIL_SHARE * largest]
    if img.format == "TIFF" and n <= 64 and len(full) == 1:
        img.seek(full[0])
        return [f"TIFF: page {full[0] + 1} of {n} read; the others are thumbnails"]
    raise NotAChestXray([Finding.of(
        "multi_frame", "it holds %(frames)s frames (a series or a moving sequence), not a "
        "single radiograph.", frames=n)], lead=N_("This is not a frontal chest X-ray:"))


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 gate: DecodeGate | None = None,
                 dicom_header_check: Callable | None = None) -> DecodedImage:
    """Decode image bytes (type detected from the bytes) into 8-bit grayscale.

    `gate` bounds how many large decodes run at once; `dicom_header_check(header)` judges a
    DICOM header before any pixel is decoded (raises to refuse, returns warnings).
    """
    if not data:
        raise UnsupportedImage(N_("The file is empty."), code="empty_file")
    fmt = sniff_format(data)
    if fmt == "DICOM":
        return decode_dicom(data, max_pixels, gate, dicom_header_check)
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImage(
            N_("This file type is not supported. Please upload a chest X-ray as JPEG, PNG, BMP, "
               "TIFF or DICOM."),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            notes = _one_frame(img)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    N_("The image is too large (%(width)s x %(height)s pixels). Please upload a "
                       "smaller export of the X-ray."), params={"width": width, "height": height}
                )
            if fmt == "JPEG":
                # Decode at reduced scale: decoding dominates the request time.
                img.draft(img.mode if img.mode in ("L", "RGB") else None,
                          (DATASET_SIZE, DATASET_SIZE))
            with hold(gate, img.size[0] * img.size[1] * _pixel_bytes(img.mode)):
                gray, colour, depth, orientation = _load_gray(img)
            # EXIF orientations 5-8 turn the image by 90 degrees: report the shown size.
            if orientation in (5, 6, 7, 8):
                width, height = height, width
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(N_("The image has too many pixels to be processed safely.")) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedImage(
            N_("The image file is damaged or incomplete and could not be read."),
            code="undecodable_image",
        ) from exc
    return DecodedImage(
        gray=gray,
        format=fmt,
        original_size=(width, height),
        colorfulness=colour,
        bit_depth=depth,
        notes=notes,
    )
