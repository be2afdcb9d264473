"""What a decoded image is: 8-bit grayscale pixels plus what decoding learnt, and the
errors an unusable input raises (with an HTTP status and a stable code)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pneumo.app.i18n import translate

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".dic"}
"""Files taken from folders: these suffixes, or no suffix at all (DICOM exports)."""

DATASET_SIZE = 224
"""Side of the square every training image was squashed to."""


def squash(gray: Image.Image, size: int) -> Image.Image:
    """Resize the whole image to size x size, bicubic, ignoring the aspect ratio."""
    if gray.size == (size, size):
        return gray
    return gray.resize((size, size), Image.BICUBIC)


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
        return translate(self.template, self.params)


class UnsupportedImage(ImageError):
    """The bytes are not an image format we can decode (HTTP 415)."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (HTTP 413)."""

    status = 413
    code = "image_too_large"


SCOPE = N_("This app only judges pediatric frontal chest X-rays.")


@dataclass(frozen=True)
class Finding:
    """One check result: a stable code and a sentence for people (English, and its template)."""

    code: str
    message: str
    template: str | None = field(default=None, compare=False, repr=False)
    params: tuple = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, code: str, template: str, **params: object) -> Finding:
        """A finding whose message is ``template`` (a message id) filled with ``params``."""
        return cls(code, template % params if params else template, template,
                   tuple(sorted(params.items())))

    def localized(self) -> str:
        """The message in the request's language (English outside a request)."""
        params = {k: translate(v) if isinstance(v, str) else v for k, v in self.params}
        return translate(self.template or self.message, params)

    def to_json(self) -> dict:
        """The finding as a JSON-ready dict (message in the request's language)."""
        return {"code": self.code, "message": self.localized()}


class NotAChestXray(ImageError):
    """The image is not something the model may judge (HTTP 422)."""

    status = 422
    code = "not_a_chest_xray"

    def __init__(self, reasons: list[Finding], *,
                 lead: str = N_("This does not look like a chest X-ray:"),
                 fix: str | None = None):
        first = reasons[0].message if reasons else FALLBACK_REASON
        super().__init__(f"{lead} {first} {SCOPE}")
        self.reasons = reasons
        self.lead = lead
        self.fix = fix  # a transform that would make it analysable ("Rotate and analyse")

    def localized(self) -> str:
        """The message in the request's language."""
        first = self.reasons[0].localized() if self.reasons else translate(FALLBACK_REASON)
        return f"{translate(self.lead)} {first} {translate(SCOPE)}"


FALLBACK_REASON = N_("it does not look like a chest X-ray.")


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
    _squashed: tuple[Image.Image, Image.Image] | None = field(default=None, repr=False,
                                                              compare=False)

    def at_dataset_size(self) -> Image.Image:
        """``gray`` squashed to DATASET_SIZE (the preprocessing's first step), made once for
        the image checks and the model input (again if ``gray`` is replaced, e.g. turned)."""
        if self._squashed is None or self._squashed[0] is not self.gray:
            self._squashed = (self.gray, squash(self.gray, DATASET_SIZE))
        return self._squashed[1]


def colorfulness(rgb: Image.Image) -> float:
    """Hasler-Suesstrunk colourfulness of a small copy (0 for a gray image)."""
    rgb = rgb if rgb.mode == "RGB" else rgb.convert("RGB")
    small = np.asarray(rgb.resize((64, 64), Image.BILINEAR), dtype=np.float32)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
