"""Bounded memory while decoding: integer box reduction right after decoding, conversions
in row bands, large buffers mapped so freeing returns them, and a gate that lets only a few
large decodes run at once."""

import ctypes
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np

from pneumo.app.pipeline.decoded import DATASET_SIZE, N_, ImageError

log = logging.getLogger(__name__)


WORK_MIN_SIDE = 2 * DATASET_SIZE
"""Larger images are box-reduced by an integer factor right after decoding, down to a shorter
side of at least this (the heatmap is shown at most 448 px wide)..."""

WORK_MAX_PIXELS = 4_000_000
"""... and at least down to this many pixels: no full-size working copy is ever made."""

BAND_BYTES = 8 << 20
"""Conversions of large images run in row bands of about this many bytes."""

LARGE_DECODE_BYTES = 8 << 20
"""Decodes whose pixel buffers are estimated above this wait for a large-decode slot."""


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


def hold(gate: DecodeGate | None, nbytes: int):
    """The gate's slot for a decode of `nbytes`, or nothing without a gate."""
    return gate.hold(nbytes) if gate is not None else nullcontext()


def to_uint8(arr: np.ndarray) -> np.ndarray:
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


def reduce_array(arr: np.ndarray, f: int,
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
