"""DICOM decoding, hardened: the header walked and bounded before pydicom parses it,
declared sizes checked against the pixel limit, deflated data inflated with a cap, compressed
codestreams checked against the declared size."""

import io
import logging
import math
import struct
import threading
import zlib
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
from PIL import Image

from pneumo.app.pipeline.decoded import (
    N_,
    DecodedImage,
    ImageError,
    ImageTooLarge,
    UnsupportedImage,
    colorfulness,
)
from pneumo.app.pipeline.dicom_elements import check_element_count, is_pixel_tag
from pneumo.app.pipeline.memory import (
    DecodeGate,
    hold,
    reduce_array,
    reduce_factor,
    release_memory,
    to_uint8,
)

log = logging.getLogger(__name__)


class _DecoderNoise(logging.Filter):
    """Holds back pydicom's own records (ERROR with a traceback per decoder tried) while this
    thread decodes pixel data: the decode then logs one WARNING line of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.local, "decoding", False):
            self.local.last = record.getMessage().splitlines()[0][:200] if record.msg else ""
            return False
        return True


_NOISE = _DecoderNoise()
_DECODER_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base")


@contextmanager
def _quiet_decoders():
    """Within: pydicom's decoder records are held back (the filter is added on first use)."""
    for name in _DECODER_LOGGERS:  # a logger's filter sees only its own records
        logger = logging.getLogger(name)
        if _NOISE not in logger.filters:
            logger.addFilter(_NOISE)
    _NOISE.local.decoding, _NOISE.local.last = True, None
    try:
        yield _NOISE.local
    finally:
        _NOISE.local.decoding = False


MAX_BYTES_PER_PIXEL = 2
"""DICOM pixel data may declare at most max_pixels x this many bytes (16 bits a pixel)."""

MAX_DICOM_HEADER_BYTES = 8 << 20
"""A deflated DICOM's header (all before the pixel data) may inflate to at most this."""

TRAILER_SLACK = 1 << 20
"""Bytes allowed after the declared pixel data of a deflated DICOM (padding, signatures)."""



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


def _read_body(body: bytes, *, header_only: bool):
    """(data set, offset of its pixel data or None) from explicit-VR little-endian bytes."""
    from pydicom.filereader import read_dataset

    stopped: list[int] = []
    fp = io.BytesIO(body)

    def stop(tag, vr, length) -> bool:
        if header_only and is_pixel_tag(int(tag)):
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
        check_element_count(data, start, tsyntax)
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                 force=data[128:132] != b"DICM")
        return header, None
    inflater = _Inflater(data[start:])
    inflater.fill(MAX_DICOM_HEADER_BYTES, strict=False)
    prefix = inflater.body.getvalue()
    check_element_count(prefix, 0, tsyntax)
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


def _check_pixel_length(ds, header, tsyntax) -> None:
    """Refuse uncompressed pixel data longer than the header declares (another image, more
    frames or colour hiding behind the header); shorter data are damage (pydicom says so)."""
    data = ds.get("PixelData")
    if not isinstance(data, bytes) or (tsyntax is not None and tsyntax.is_compressed):
        return
    declared = _declared_bytes(header)[3]
    if len(data) > declared + 1:  # one byte of padding to an even length
        raise UnsupportedImage(
            N_("This DICOM file holds more pixel data than its header describes (%(found)s "
               "bytes for %(declared)s); it cannot be read safely. Export it again."),
            code="dicom_pixel_mismatch", params={"found": len(data), "declared": declared})


def _has_decoder(tsyntax) -> bool:
    """True when an installed plugin decodes this transfer syntax (so a failure is damage)."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(tsyntax).is_available)
    except Exception:  # no decoder class at all for this syntax
        return False


def _plain_8bit(ds) -> int | None:
    """BitsStored when the pixels are already display values: at most 8 bits, unsigned, no
    rescale and no modality LUT (the caller has no usable window or VOI LUT); else None.

    Such pixels keep their values, as the same image's PNG or JPEG does: stretching them to
    their own min..max would change the image the one preprocessing definition keeps.
    """
    bits = _int_attr(ds, "BitsStored", 16)
    slope = _first_number(ds.get("RescaleSlope"))
    intercept = _first_number(ds.get("RescaleIntercept"))
    if not 1 <= bits <= 8 or _int_attr(ds, "PixelRepresentation", 0) != 0 \
            or "ModalityLUTSequence" in ds or slope not in (None, 1.0) \
            or intercept not in (None, 0.0):
        return None
    return bits


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
    _check_pixel_length(ds, header, tsyntax)
    if _int_attr(ds, "SamplesPerPixel", 1) == 1 and not str(
            ds.get("PhotometricInterpretation") or "MONOCHROME2").upper().startswith("MONO"):
        ds.PhotometricInterpretation = "MONOCHROME2"  # one value a pixel: gray (warned)
    try:
        with _quiet_decoders() as noise:
            arr = pixel_array(ds, index=0, view_only=True)
    except Exception as exc:
        log.warning("DICOM pixel data not decoded (%s): %s", getattr(tsyntax, "name", tsyntax),
                    noise.last or f"{type(exc).__name__}: {str(exc)[:200]}")
        compressed = tsyntax is not None and getattr(tsyntax, "is_compressed", False)
        if compressed and _has_decoder(tsyntax):
            raise UnsupportedImage(N_("The compressed image in this DICOM file is damaged or "
                                      "incomplete."), code="undecodable_image") from exc
        if compressed:
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
        rgb = Image.fromarray(to_uint8(arr if f == 1 else reduce_array(arr, f))).convert("RGB")
        return rgb.convert("L"), colorfulness(rgb)
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

    bits = _plain_8bit(ds) if not use_voi else None
    if bits is not None:  # already display values: kept (scaled to 0..255 when < 8 bits)
        scale = 255.0 / ((1 << bits) - 1)
        out = np.clip(np.round(reduce_array(arr, f) * scale), 0, 255).astype(np.uint8)
    else:
        out = to_uint8(reduce_array(arr, f, transform))
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out, mode="L"), 0.0


def decode_dicom(data: bytes, max_pixels: int, gate: DecodeGate | None,
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
        with hold(gate, 2 * nbytes + (nbytes if inflater is not None else 0)):
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
