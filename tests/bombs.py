"""Hostile uploads for the clinic app: DICOM that is not a chest X-ray, and memory bombs.

Each builder returns the bytes of one upload that fits the app's limits (30 MB, 50 MP) but
used to cost far more memory than its size, or to get a diagnosis it must not get.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from apptools import XRAY_NORMAL, dicom_bytes, encode, gray_array
from PIL import Image

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def retag_dicom(data: bytes, **attrs) -> bytes:
    """A DICOM file with header attributes set (a None value deletes the attribute)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def xray_dicom(**attrs) -> bytes:
    """The fixture X-ray as a DX DICOM with header attributes changed (Modality="CT", ...)."""
    return retag_dicom(dicom_bytes(XRAY_NORMAL), **attrs)


def pydicom_test_file(name: str) -> bytes:
    """One of pydicom's bundled test files (CT_small.dcm, JPEG2000.dcm, ...)."""
    from pydicom.data import get_testdata_file

    return open(get_testdata_file(name), "rb").read()


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian data element."""
    if len(value) % 2:
        value += b" " if vr in (b"CS", b"LO", b"SH", b"DS", b"IS") else b"\0"
    tag = struct.pack("<HH", group, elem)
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF"):
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _file_meta(transfer_syntax: str, sop_class: str = DX_PRESENTATION) -> bytes:
    """Preamble, 'DICM' and a file meta group."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + fp.getvalue()


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def deflated_dicom_bomb(inflated_mb: int = 1000, *, where: str = "pixels", rows: int = 1,
                        cols: int = 1) -> bytes:
    """A deflated DICOM declaring rows x cols pixels whose data set inflates to inflated_mb MB.

    where="pixels": the zeros are the pixel data (inflated_mb=0: exactly the declared size);
    "private": a private element before it.
    """
    head = [
        _element(0x0008, 0x0016, b"UI", DX_PRESENTATION.encode()),
        _element(0x0008, 0x0060, b"CS", b"DX"),
        _element(0x0028, 0x0002, b"US", _us(1)),
        _element(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
        _element(0x0028, 0x0010, b"US", _us(rows)),
        _element(0x0028, 0x0011, b"US", _us(cols)),
        _element(0x0028, 0x0100, b"US", _us(16)),
        _element(0x0028, 0x0101, b"US", _us(16)),
        _element(0x0028, 0x0102, b"US", _us(15)),
        _element(0x0028, 0x0103, b"US", _us(0)),
    ]
    size = inflated_mb * 1024 * 1024
    pixels = rows * cols * 2
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [_file_meta(DEFLATED_TS)]
    if where == "private":
        out.append(z.compress(b"".join(head[:2])))
        out.append(z.compress(_element(0x0009, 0x0010, b"LO", b"BOMB")))
        out.append(z.compress(struct.pack("<HH", 0x0009, 0x1000) + b"OB\0\0"
                              + struct.pack("<I", size)))
        head = head[2:]
    else:
        out.append(z.compress(b"".join(head)))
        head = []
        pixels = max(size, pixels)
    chunk = bytes(1024 * 1024)
    if where == "private":
        for _ in range(inflated_mb):
            out.append(z.compress(chunk))
        out.append(z.compress(b"".join(head)))
    out.append(z.compress(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0"
                          + struct.pack("<I", pixels)))
    left = pixels
    while left > 0:
        n = min(left, len(chunk))
        out.append(z.compress(chunk[:n]))
        left -= n
    out.append(z.flush())
    return b"".join(out)


def png16_bomb(side: int = 7000) -> bytes:
    """A 16-bit grayscale PNG of side x side pixels (a smooth ramp: ~100 KB)."""
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // max(1, side - 1)).astype(np.uint16)
    img = Image.new("I;16", (side, side))
    row = Image.frombytes("I;16", (side, 1), ramp.tobytes())
    for y in range(0, side, 1):
        img.paste(row, (0, y))
    return encode(img, "PNG", compress_level=9)


def float_tiff_bomb(side: int = 7000) -> bytes:
    """A 32-bit float grayscale TIFF of side x side pixels, deflate-compressed (~300 KB)."""
    img = Image.new("F", (side, side), 0.0)
    img.paste(1000.0, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    return encode(img, "TIFF", compression="tiff_adobe_deflate")


def big_xray(side: int = 7000, fmt: str = "PNG16") -> bytes:
    """The fixture X-ray enlarged to side x side: 'PNG16', 'FTIFF' (float) or 'RGBA'."""
    g = Image.fromarray(gray_array(XRAY_NORMAL)).resize((side, side), Image.BILINEAR)
    if fmt == "PNG16":
        return encode(Image.fromarray(np.asarray(g, dtype=np.uint16) * 257), "PNG")
    if fmt == "FTIFF":
        return encode(g.convert("F"), "TIFF", compression="tiff_adobe_deflate")
    if fmt == "RGBA":
        return encode(g.convert("RGBA"), "PNG")
    raise ValueError(fmt)


def window_width_dicom(width: float) -> bytes:
    """The fixture X-ray as DICOM with WindowWidth set to `width` (0, negative, NaN...)."""
    return xray_dicom(WindowCenter=1000.0, WindowWidth=width)


def max_size_rgba_png(target_mb: float = 28.5) -> bytes:
    """A 7000 x 7000 RGBA PNG of about target_mb MB (noise bands): the largest decode allowed."""
    side = 7000
    rows = int(target_mb * 2**20 / (3.5 * side))
    a = np.zeros((side, side, 4), np.uint8)
    a[..., 3] = 255
    a[:rows, :, :3] = np.random.default_rng(0).integers(0, 256, (rows, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(a), "PNG", compress_level=1)


def element_bomb(n_elements: int = 3_500_000) -> bytes:
    """A DX DICOM of 64 x 64 pixels whose header holds n_elements empty private elements.

    Every element costs the file 8 bytes but pydicom about 700: 3.5 million fit in 28 MB.
    """
    tags = np.arange(n_elements, dtype=np.int64)
    rec = np.zeros(n_elements, dtype=[("g", "<u2"), ("e", "<u2"), ("vr", "S2"), ("n", "<u2")])
    rec["g"] = 0x0029 + 2 * (tags // 0xE000)  # odd (private) groups after the image module
    rec["e"] = 0x1000 + tags % 0xE000
    rec["vr"] = b"SH"
    head = b"".join([
        _element(0x0008, 0x0016, b"UI", DX_PRESENTATION.encode()),
        _element(0x0008, 0x0060, b"CS", b"DX"),
        _element(0x0028, 0x0002, b"US", _us(1)),
        _element(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
        _element(0x0028, 0x0010, b"US", _us(64)),
        _element(0x0028, 0x0011, b"US", _us(64)),
        _element(0x0028, 0x0100, b"US", _us(8)),
        _element(0x0028, 0x0101, b"US", _us(8)),
        _element(0x0028, 0x0102, b"US", _us(7)),
        _element(0x0028, 0x0103, b"US", _us(0)),
    ])
    pixels = _element(0x7FE0, 0x0010, b"OW", bytes(64 * 64))
    return _file_meta("1.2.840.10008.1.2.1") + head + rec.tobytes() + pixels
