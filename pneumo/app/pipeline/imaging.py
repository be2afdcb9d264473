"""The one preprocessing definition: any input image -> the model's input tensor.

Training, export, evaluation and the app all call this module, so that a model sees
exactly the same pixels in the clinic as it saw in training. It needs Pillow and numpy
(pydicom only for DICOM), never TensorFlow.

The recipe mirrors how the training data was made (see shared/data/PROVENANCE.md):
grayscale, the whole image squashed to 224 x 224 with bicubic resampling (aspect ratio not
kept, no crop), then -- only if the model's input is smaller -- squashed again to the
model's input size, and scaled to float32 in [0, 1].

Memory is bounded for every input: sizes are checked before decoding, a large image is
box-reduced by an integer factor right after decoding (to a shorter side of at least 448 px,
in row bands, before any 16-bit/float/palette/alpha conversion), deflated DICOM is inflated
with a cap, and a `DecodeGate` lets only a few large decodes run at once.
"""

from __future__ import annotations

import ctypes
import io
import logging
import math
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

DATASET_SIZE = 224
"""Side of the square every training image was squashed to."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Refuse images with more pixels than this (decompression bombs). The one default: the app's
``max_pixels`` setting (pneumo.app.config), the batch command and the self-test all use it."""

WORK_MIN_SIDE = 2 * DATASET_SIZE
"""Larger images are box-reduced by an integer factor right after decoding, down to a shorter
side of at least this (the heatmap is shown at most 448 px wide)..."""

WORK_MAX_PIXELS = 4_000_000
"""... and at least down to this many pixels: no full-size working copy is ever made."""

BAND_BYTES = 8 << 20
"""Conversions of large images run in row bands of about this many bytes."""

LARGE_DECODE_BYTES = 8 << 20
"""Decodes whose pixel buffers are estimated above this wait for a large-decode slot."""

MAX_BYTES_PER_PIXEL = 2
"""DICOM pixel data may declare at most max_pixels x this many bytes (16 bits a pixel)."""

MAX_DICOM_HEADER_BYTES = 8 << 20
"""A deflated DICOM's header (all before the pixel data) may inflate to at most this."""

TRAILER_SLACK = 1 << 20
"""Bytes allowed after the declared pixel data of a deflated DICOM (padding, signatures)."""

MAX_DICOM_ELEMENTS = 20_000
"""Data elements and sequence items a DICOM header may hold (a CR/DX header has hundreds; each
costs pydicom about 700 bytes, so a 30 MB file of tiny elements would need gigabytes)."""

RECIPE = (
    "grayscale (ITU-R 601 luma; 16-bit and DICOM rescaled to 8-bit), EXIF orientation applied, "
    f"whole image squashed to {DATASET_SIZE}x{DATASET_SIZE} bicubic (aspect ratio not kept, no crop), "
    "then squashed bicubic to the model input size, float32 = uint8 / 255"
)


def N_(text: str) -> str:  # noqa: N802 - the gettext marker (pneumo.app.i18n.N_, without Flask)
    """Mark ``text`` for extraction; it is translated where the error is answered."""
    return text


class ImageError(ValueError):
    """An input image that cannot be used; carries an HTTP status and a stable code.

    ``message`` is English (logs, batch results); ``template`` and ``params`` give it again in
    the request's language (``localized``).
    """

    status = 415
    code = "unsupported_image"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 params: dict | None = None):
        self.template = message
        self.params = dict(params or {})
        self.message = message % self.params if self.params else message
        super().__init__(self.message)
        if code:
            self.code = code
        if status:
            self.status = status

    def localized(self) -> str:
        """The message in the request's language (English outside a request)."""
        from pneumo.app.i18n import translate

        return translate(self.template, self.params)


class UnsupportedImage(ImageError):
    """The bytes are not an image format we can decode (HTTP 415)."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (HTTP 413)."""

    status = 413
    code = "image_too_large"


@dataclass
class DecodedImage:
    """A decoded input: 8-bit grayscale pixels plus what we learnt while decoding."""

    gray: Image.Image
    format: str
    original_size: tuple[int, int]
    colorfulness: float = 0.0
    bit_depth: int = 8
    notes: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """(code, message) quality warnings found while decoding (DICOM header, ignored window)."""


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


# --- bounded memory ------------------------------------------------------------------------

def reduce_factor(width: int, height: int) -> int:
    """The integer box reduction applied right after decoding (1 = none).

    As large as keeps the shorter side >= WORK_MIN_SIDE, and at least what brings the image
    to WORK_MAX_PIXELS, so no full-size working copy (float, RGB, flattened) is ever made.
    """
    f = max(1, min(width, height) // WORK_MIN_SIDE)
    f = max(f, math.ceil(math.sqrt(width * height / WORK_MAX_PIXELS)))
    while f > 1 and (width // f) * (height // f) == 0:
        f -= 1
    return f


_MALLOC_TRIM: object = None
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def map_large_buffers(threshold: int = 1 << 20) -> bool:
    """Make glibc serve buffers >= threshold with mmap, so freeing them returns the memory.

    Without this glibc raises its threshold after the first large free and keeps later image
    buffers on the heap, where RSS stays high after a large upload. True if it was set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc; a no-op elsewhere)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        if sys.platform.startswith("linux"):
            try:
                _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


class DecodeGate:
    """At most `slots` large decodes at once; the others wait (the app's memory bound)."""

    def __init__(self, slots: int, *, large_bytes: int = LARGE_DECODE_BYTES,
                 timeout_s: float = 120.0):
        if slots < 1:
            raise ValueError("at least one decode slot is needed")
        self.slots = slots
        self.large_bytes = large_bytes
        self.timeout_s = timeout_s
        self._sem = threading.BoundedSemaphore(slots)

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Wait for a slot if `nbytes` (estimated pixel memory) is large; trim the heap after."""
        if nbytes < self.large_bytes:
            yield
            return
        if not self._sem.acquire(timeout=self.timeout_s):
            log.warning("no large-decode slot free after %.0f s", self.timeout_s)
            raise ImageError(N_("The server is busy with other large images. Please try again "
                                "in a minute."), code="server_busy", status=503)
        try:
            yield
        finally:
            self._sem.release()
            release_memory()


def _hold(gate: DecodeGate | None, nbytes: int):
    """The gate's slot for a decode of `nbytes`, or nothing without a gate."""
    return gate.hold(nbytes) if gate is not None else nullcontext()


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linearly rescale any numeric array to 0..255 over its own min..max (in row bands)."""
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scale = 255.0 / (hi - lo)
    out = np.empty(arr.shape, dtype=np.uint8)
    src, dst = arr.reshape(arr.shape[0], -1), out.reshape(arr.shape[0], -1)
    step = max(1, BAND_BYTES // (8 * src.shape[1]))
    with np.errstate(invalid="ignore"):
        for r in range(0, src.shape[0], step):
            band = src[r:r + step].astype(np.float64)
            dst[r:r + step] = np.clip(np.round((band - lo) * scale), 0, 255)
    return out


def _reduce_array(arr: np.ndarray, f: int,
                  fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """fn applied to arr (H, W[, C]) band by band, then box-averaged by f: float64 (H/f, W/f).

    The last H % f rows and W % f columns are dropped; no full-size float copy is made.
    """
    h, w = arr.shape[:2]
    oh, ow = h // f, w // f
    channels = arr.shape[2:]
    per_row = max(1, w * f * 8 * (channels[0] if channels else 1))
    rows = max(1, BAND_BYTES // per_row)
    out = np.empty((oh, ow, *channels), dtype=np.float64)
    for r in range(0, oh, rows):
        r2 = min(oh, r + rows)
        band = arr[r * f:r2 * f, :ow * f]
        band = np.asarray(fn(band) if fn is not None else band, dtype=np.float64)
        if f > 1:
            band = band.reshape(r2 - r, f, ow, f, *channels).mean(axis=(1, 3))
        out[r:r2] = band
    return out


# --- DICOM ---------------------------------------------------------------------------------

def _first_number(value) -> float | None:
    """The first value of a numeric DICOM attribute as float, None if absent or not a number."""
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
            value = value[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _int_attr(ds, keyword: str, default: int) -> int:
    """An integer attribute, `default` when absent, empty or not a number."""
    try:
        value = _first_number(ds.get(keyword))
    except Exception:  # pydicom raises on badly encoded values
        return default
    return default if value is None or not math.isfinite(value) else int(value)


def _window_problem(ds) -> str | None:
    """Why the window (center/width) of a DICOM file cannot be used, or None if it can."""
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is None or width is None:
        return "it is not a number" if ("WindowCenter" in ds or "WindowWidth" in ds) else None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0 or (
            function == "LINEAR" and width < 1):
        return f"WindowWidth {width:g}"
    return None


def _dicom_meta(data: bytes):
    """(offset of the data set, file meta Dataset or None): group 0002 read on its own."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filereader import read_dataset

    start = 132 if data[128:132] == b"DICM" else 0
    if data[start:start + 2] != b"\x02\x00":
        return start, None
    fp = io.BytesIO(data)
    fp.seek(start)
    meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                        stop_when=lambda tag, vr, length: tag >> 16 != 2)
    return fp.tell(), FileMetaDataset(meta)


_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 32


class _TooManyElements(Exception):
    """The header holds more elements than MAX_DICOM_ELEMENTS (or nests too deep)."""


def _is_sq_tag(tag: int) -> bool:
    """True when pydicom's dictionary says the tag is a sequence (implicit VR files)."""
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _walk_elements(buf: bytes, pos: int, end: int, implicit: bool, order: str,
                   budget: list[int], depth: int = 0) -> int:
    """Count the data elements and items of buf[pos:end] against budget[0], without parsing.

    Stops at the top-level pixel data, at a delimiter (returning after it) or at `end`;
    raises _TooManyElements when the budget runs out.
    """
    if depth > _MAX_DEPTH:
        raise _TooManyElements
    while pos + 8 <= end:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooManyElements
        group, elem = struct.unpack_from(order + "HH", buf, pos)
        if group == 0xFFFE:  # an item or a delimiter: a 4-byte length, no VR
            length = struct.unpack_from(order + "I", buf, pos + 4)[0]
            pos += 8
            if elem in (0xE00D, 0xE0DD):
                return pos
            if length == _UNDEFINED:
                pos = _walk_elements(buf, pos, end, implicit, order, budget, depth + 1)
            else:
                _walk_elements(buf, pos, min(end, pos + length), implicit, order, budget,
                               depth + 1)
                pos += length
            continue
        if depth == 0 and _is_pixel_tag(group << 16 | elem):
            return pos
        vr = buf[pos + 4:pos + 6]
        if implicit:
            length = struct.unpack_from(order + "I", buf, pos + 4)[0]
            pos += 8
            nested = length == _UNDEFINED or _is_sq_tag(group << 16 | elem)
        elif vr in _LONG_VRS:
            length = struct.unpack_from(order + "I", buf, pos + 8)[0]
            pos += 12
            nested = vr == b"SQ" or length == _UNDEFINED
        else:
            length = struct.unpack_from(order + "H", buf, pos + 6)[0]
            pos += 8
            nested = False
        if length == _UNDEFINED:
            pos = _walk_elements(buf, pos, end, implicit, order, budget, depth + 1)
        else:
            if nested:
                _walk_elements(buf, pos, min(end, pos + length), implicit, order, budget,
                               depth + 1)
            pos += length
    return pos


def _check_element_count(buf: bytes, pos: int, tsyntax) -> None:
    """Refuse (413) a header with more than MAX_DICOM_ELEMENTS elements, before pydicom."""
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

    if tsyntax is None:  # no file meta: guess as pydicom does
        implicit = not (buf[pos + 4:pos + 6].isalpha() and buf[pos + 4:pos + 6].isupper())
    else:
        implicit = tsyntax == ImplicitVRLittleEndian
    order = ">" if tsyntax == ExplicitVRBigEndian else "<"
    try:
        _walk_elements(buf, pos, len(buf), implicit, order, [MAX_DICOM_ELEMENTS])
    except _TooManyElements:
        log.warning("DICOM refused: more than %d header elements", MAX_DICOM_ELEMENTS)
        raise ImageTooLarge(N_("This DICOM file's header holds too many elements to be "
                               "processed safely.")) from None
    except (struct.error, IndexError):
        pass  # damaged: pydicom says so


def _is_pixel_tag(tag: int) -> bool:
    """PixelData, FloatPixelData or DoubleFloatPixelData."""
    return tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _read_body(body: bytes, *, header_only: bool):
    """(data set, offset of its pixel data or None) from explicit-VR little-endian bytes."""
    from pydicom.filereader import read_dataset

    stopped: list[int] = []
    fp = io.BytesIO(body)

    def stop(tag, vr, length) -> bool:
        if header_only and _is_pixel_tag(int(tag)):
            stopped.append(1)
            return True
        return False

    ds = read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=stop)
    return ds, (fp.tell() if stopped else None)


def _declared_bytes(header) -> tuple[int, int, int, int]:
    """(rows, columns, frames, bytes of all frames) as the header declares them."""
    rows, cols = _int_attr(header, "Rows", 0), _int_attr(header, "Columns", 0)
    frames = max(1, _int_attr(header, "NumberOfFrames", 1))
    samples = max(1, _int_attr(header, "SamplesPerPixel", 1))
    bits = max(1, _int_attr(header, "BitsAllocated", 16))
    return rows, cols, frames, rows * cols * frames * samples * math.ceil(bits / 8)


def _check_declared(header, max_pixels: int) -> tuple[int, int, int, int]:
    """The declared size, refused (413) beyond the pixel limit: nothing is decoded yet."""
    rows, cols, frames, nbytes = _declared_bytes(header)
    if rows * cols * frames > max_pixels or nbytes > MAX_BYTES_PER_PIXEL * max_pixels:
        if frames > 1:
            raise ImageTooLarge(N_("The image is too large (%(width)s x %(height)s pixels, "
                                   "%(frames)s frames)."),
                                params={"width": cols, "height": rows, "frames": frames})
        raise ImageTooLarge(N_("The image is too large (%(width)s x %(height)s pixels)."),
                            params={"width": cols, "height": rows})
    return rows, cols, frames, nbytes


class _Inflater:
    """The data set of a deflated DICOM file, inflated only up to a cap."""

    CHUNK = 4 << 20

    def __init__(self, raw: bytes):
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._tail = raw
        self.body = io.BytesIO()
        self.header_bytes = 0  # where the pixel data element starts in the inflated data set

    @property
    def done(self) -> bool:
        """True once the whole data set is inflated."""
        return self._z.eof or not self._tail

    def fill(self, cap: int, *, strict: bool) -> None:
        """Inflate until done or `cap` bytes; if `strict`, ImageTooLarge for data beyond it."""
        if self.done:  # already whole (and small: it fitted the header's cap)
            return
        limit = cap + 1 if strict else cap
        try:
            while not self.done and self.body.tell() < limit:
                want = min(self.CHUNK, limit - self.body.tell())
                self.body.write(self._z.decompress(self._tail, want))
                self._tail = self._z.unconsumed_tail
        except zlib.error as exc:
            raise UnsupportedImage(N_("This DICOM file's compressed data are damaged."),
                                   code="undecodable_image") from exc
        if strict and self.body.tell() > cap:
            self.body = io.BytesIO()
            log.warning("deflated DICOM refused: its data set inflates beyond %d bytes", cap)
            raise ImageTooLarge(N_("This DICOM file's compressed data expand far beyond the "
                                   "image it declares; it was not processed."))


def _dicom_header(data: bytes, start: int, meta):
    """(header without pixel data, inflater or None): reads no pixel data.

    A deflated data set is inflated only up to MAX_DICOM_HEADER_BYTES here.
    """
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax != DeflatedExplicitVRLittleEndian:
        _check_element_count(data, start, tsyntax)
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                 force=data[128:132] != b"DICM")
        return header, None
    inflater = _Inflater(data[start:])
    inflater.fill(MAX_DICOM_HEADER_BYTES, strict=False)
    prefix = inflater.body.getvalue()
    _check_element_count(prefix, 0, tsyntax)
    try:
        header, pixel_offset = _read_body(prefix, header_only=True)
    except Exception:
        if inflater.done:
            raise
        pixel_offset = None  # cut off inside the header
    del prefix
    if pixel_offset is None and not inflater.done:
        inflater.body = None
        raise ImageTooLarge(N_("This DICOM file's header is too large to be processed "
                               "safely."))
    inflater.header_bytes = pixel_offset or 0
    return header, inflater


def _codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from the start of a JPEG, JPEG-LS or JPEG 2000 codestream, if found."""
    j2k = frame.find(b"\xff\x4f\xff\x51")
    if j2k >= 0 and len(frame) >= j2k + 24:
        x, y, x0, y0 = struct.unpack(">IIII", frame[j2k + 8:j2k + 24])
        return x - x0, y - y0
    if not frame.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 9 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(frame[pos + 2:pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF, 0xF7):
            height, width = struct.unpack(">HH", frame[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


def _check_codestream(ds, rows: int, cols: int) -> None:
    """Refuse compressed pixel data whose codestream declares another size than the header."""
    data = ds.get("PixelData")
    if not isinstance(data, bytes) or data[:4] != b"\xfe\xff\x00\xe0":
        return
    offset = 8 + int.from_bytes(data[4:8], "little")  # after the basic offset table
    if data[offset:offset + 4] != b"\xfe\xff\x00\xe0":
        return
    size = _codestream_size(data[offset + 8:offset + 8 + 65536])
    if size is not None and size[1] and size != (cols, rows):
        raise UnsupportedImage(
            N_("The compressed image inside this DICOM file (%(width)s x %(height)s pixels) "
               "does not match the size its header declares (%(columns)s x %(rows)s)."),
            code="undecodable_image",
            params={"width": size[0], "height": size[1], "columns": cols, "rows": rows})


def _dicom_pixels(data: bytes, meta, header, inflater: _Inflater | None, rows: int, cols: int,
                  warnings_out: list[tuple[str, str]]) -> tuple[Image.Image, float]:
    """Decode the first frame: modality LUT, VOI LUT / window, reduced; (8-bit image, colour)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
    from pydicom.uid import ExplicitVRLittleEndian

    if inflater is None:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    else:  # the rest of the data set, capped at what its header declares
        inflater.fill(inflater.header_bytes + _declared_bytes(header)[3] + TRAILER_SLACK,
                      strict=True)
        body, inflater.body = inflater.body.getvalue(), None
        ds, _ = _read_body(body, header_only=False)
        del body
        meta.TransferSyntaxUID = ExplicitVRLittleEndian  # as inflated now
        ds.file_meta = meta
    if "PixelData" not in ds:
        raise UnsupportedImage(N_("This DICOM file holds no image."), code="undecodable_image")
    _check_codestream(ds, rows, cols)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = pixel_array(ds, index=0, view_only=True)
    except Exception as exc:
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            raise UnsupportedImage(
                N_("This DICOM file uses a compression this app cannot decode "
                   "(%(compression)s). Export it uncompressed or as PNG/JPEG and try again."),
                code="unsupported_dicom_compression",
                params={"compression": str(getattr(tsyntax, "name", tsyntax))}) from exc
        raise UnsupportedImage(N_("The image in this DICOM file is damaged or incomplete."),
                               code="undecodable_image") from exc
    del ds.PixelData  # the array may be a view on it; it keeps what it needs alive
    f = reduce_factor(arr.shape[1], arr.shape[0])
    if arr.ndim == 3:  # colour DICOM
        rgb = Image.fromarray(_to_uint8(arr if f == 1 else _reduce_array(arr, f))).convert("RGB")
        return rgb.convert("L"), _colorfulness(rgb)
    try:
        apply_modality_lut(arr[:1, :1], ds)
    except Exception as exc:
        raise UnsupportedImage(N_("This DICOM file describes its pixel values (rescale or "
                                  "modality LUT) in a way that cannot be read."),
                               code="undecodable_image") from exc
    problem = None if "VOILUTSequence" in ds else _window_problem(ds)  # a LUT wins
    use_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    if use_voi and problem is None:
        try:
            apply_voi_lut(apply_modality_lut(arr[:1, :1], ds), ds)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"[:80]
    if use_voi and problem is not None:
        use_voi = False
        log.info("DICOM window ignored: %s", problem)
        warnings_out.append(("dicom_window_ignored",
                             f"The display window in the DICOM file is invalid ({problem}) and "
                             "was ignored: the image is shown over its full range of values."))

    def transform(band: np.ndarray) -> np.ndarray:
        band = apply_modality_lut(band, ds)
        return apply_voi_lut(band, ds) if use_voi else band

    out = _to_uint8(_reduce_array(arr, f, transform))
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out, mode="L"), 0.0


def _decode_dicom(data: bytes, max_pixels: int, gate: DecodeGate | None,
                  header_check: Callable | None) -> DecodedImage:
    """Decode a DICOM file: header rules and size first, then modality LUT, VOI/window."""
    try:
        import pydicom  # noqa: F401
    except ImportError as exc:  # pragma: no cover - pydicom is a base dependency
        raise UnsupportedImage(N_("DICOM support is not installed.")) from exc
    try:
        start, meta = _dicom_meta(data)
        header, inflater = _dicom_header(data, start, meta)
    except ImageError:
        release_memory()  # a refused deflated header may have inflated megabytes
        raise
    except Exception as exc:
        raise UnsupportedImage(
            N_("This DICOM file is damaged and could not be read."), code="undecodable_image"
        ) from exc
    if meta is not None and "SOPClassUID" not in header and "MediaStorageSOPClassUID" in meta:
        header.SOPClassUID = meta.MediaStorageSOPClassUID
    found: list[tuple[str, str]] = []
    if header_check is not None:  # refuses what is not a chest X-ray: nothing decoded yet
        found.extend((w.code, w.message) for w in header_check(header))
    rows, cols, frames, nbytes = _check_declared(header, max_pixels)
    notes = []
    if frames > 1:
        notes.append("multi-frame DICOM: first frame used")
    try:
        with _hold(gate, 2 * nbytes + (nbytes if inflater is not None else 0)):
            gray, colour = _dicom_pixels(data, meta, header, inflater, rows, cols, found)
    except ImageError:
        raise
    except Exception as exc:
        raise UnsupportedImage(N_("The image in this DICOM file is damaged or incomplete."),
                               code="undecodable_image") from exc
    return DecodedImage(
        gray=gray,
        format="DICOM",
        original_size=(cols, rows),
        colorfulness=colour,
        bit_depth=_int_attr(header, "BitsStored", 8),
        notes=notes,
        warnings=found,
    )


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


def _colorfulness(rgb: Image.Image) -> float:
    """Hasler-Suesstrunk colourfulness of a small copy (0 for a gray image)."""
    rgb = rgb if rgb.mode == "RGB" else rgb.convert("RGB")
    small = np.asarray(rgb.resize((64, 64), Image.BILINEAR), dtype=np.float32)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


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
        return Image.fromarray(_to_uint8(np.asarray(work)), mode="L"), 0.0, 32
    if work.mode == "I":
        arr = np.asarray(work)
        if source.startswith("I;16") or arr.max(initial=0) > 255:
            return Image.fromarray(_to_uint8(arr), mode="L"), 0.0, 16
        return Image.fromarray(arr.astype(np.uint8), mode="L"), 0.0, 8
    if work.mode == "L":
        return work, 0.0, 1 if source == "1" else 8
    return work.convert("L"), _colorfulness(work), 8


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
        return _decode_dicom(data, max_pixels, gate, dicom_header_check)
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImage(
            N_("This file type is not supported. Please upload a chest X-ray as JPEG, PNG, BMP, "
               "TIFF or DICOM."),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
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
            with _hold(gate, img.size[0] * img.size[1] * _pixel_bytes(img.mode)):
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
    )


def squash(gray: Image.Image, size: int) -> Image.Image:
    """Resize the whole image to size x size, bicubic, ignoring the aspect ratio."""
    if gray.size == (size, size):
        return gray
    return gray.resize((size, size), Image.BICUBIC)


INTENSITY_METHODS = ("none", "equalize", "stretch")
"""Intensity normalisations a model may ask for (metadata key ``intensity``)."""


def normalize_intensity(u8: np.ndarray, method: str = "none") -> np.ndarray:
    """Per-image intensity normalisation of uint8 pixels (..., H, W) at the model's input size.

    'none' leaves the pixels alone; 'equalize' is histogram equalisation (the cumulative
    histogram mapped onto 0-255), which removes most exposure, contrast and gamma
    differences between X-ray units; 'stretch' maps the 1st-99th percentile onto 0-255.
    """
    if method == "none":
        return u8
    if method not in INTENSITY_METHODS:
        raise ValueError(f"unknown intensity normalisation {method!r}; use {INTENSITY_METHODS}")
    if u8.ndim > 2:  # a batch: each image on its own
        return np.stack([normalize_intensity(im, method) for im in u8])
    if method == "equalize":
        hist = np.bincount(u8.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        lo = cdf[np.flatnonzero(hist)[0]]  # pixels at the darkest level map to 0
        span = max(int(cdf[-1] - lo), 1)
        lut = np.clip(np.round((cdf - lo) * 255.0 / span), 0, 255).astype(np.uint8)
        return lut[u8]
    lo, hi = np.percentile(u8, [1.0, 99.0])
    scaled = (u8.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_model_input(gray: Image.Image, size: int, intensity: str = "none") -> np.ndarray:
    """8-bit grayscale image -> float32 array (size, size, 1) in [0, 1].

    `intensity` is the model's normalisation (its metadata ``intensity``), applied after
    the squash to the input size, exactly as in training.
    """
    img = squash(gray, DATASET_SIZE)
    if size != DATASET_SIZE:
        img = squash(img, size)
    u8 = normalize_intensity(np.asarray(img, dtype=np.uint8), intensity)
    return (u8.astype(np.float32) / 255.0)[..., None]


def preprocess_bytes(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
                     ) -> tuple[np.ndarray, DecodedImage]:
    """Image bytes -> (model input (size, size, 1), decoded image info)."""
    decoded = decode_image(data, max_pixels=max_pixels)
    return to_model_input(decoded.gray, size), decoded


def preprocess_path(path: str | Path, size: int) -> np.ndarray:
    """Image file -> model input (size, size, 1) float32 in [0, 1]."""
    return preprocess_bytes(Path(path).read_bytes(), size)[0]


def load_uint8(path: str | Path, size: int) -> np.ndarray:
    """Image file -> uint8 array (size, size): the training pipeline's cached form."""
    x = preprocess_path(path, size)
    return np.round(x[..., 0] * 255.0).astype(np.uint8)
