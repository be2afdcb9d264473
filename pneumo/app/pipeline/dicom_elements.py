"""A DICOM header's elements counted before pydicom parses it (a header of millions of tiny
elements would cost pydicom gigabytes): a walk over the raw bytes, no parsing."""

import logging
import struct

from pneumo.app.pipeline.decoded import N_, ImageTooLarge

log = logging.getLogger(__name__)

MAX_DICOM_ELEMENTS = 20_000
"""Data elements and sequence items a DICOM header may hold (a CR/DX header has hundreds; each
costs pydicom about 700 bytes, so a 30 MB file of tiny elements would need gigabytes)."""

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
        if depth == 0 and is_pixel_tag(group << 16 | elem):
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


def check_element_count(buf: bytes, pos: int, tsyntax) -> None:
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


def is_pixel_tag(tag: int) -> bool:
    """PixelData, FloatPixelData or DoubleFloatPixelData."""
    return tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)
