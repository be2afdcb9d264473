"""Is the film the right way up? Two small linear heads read features the model run already
gives (its class-activation map, its pooled embedding, and a 16 x 16 thumbnail of its input):
one says "upside down" (rotated 180 degrees or flipped top to bottom), one says "mirrored"
(left and right swapped; a 180-degree rotation is both).

The heads travel inside the model file's metadata (``orientation``), fitted by
`pneumo orientation-check` (pneumo.export.orientation) on training images in all four
orientations and rebuilt at every export, so a signed model file carries them under its
signature. The one exception is the model bundled with the app, signed before the check
existed with a key kept offline: its heads ship beside it in the app's own package
(``pneumo.int8.onnx.orientation.json``, naming the file's sha256), as trusted as the app's
code; a side file is read only from the app's bundled-models folder and only for the file
whose sha256 it names. A model file without heads gets no orientation check: its answers say
``"orientation": {"checked": false}``, and nothing is refused for it.

Numpy only: a dot product per head, no extra model run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.app import bounded_json
from pneumo.app.config import DEFAULT_MODEL
from pneumo.app.i18n import N_
from pneumo.app.pipeline.onnx_model import decode_array

METADATA_KEY = "orientation"
MAX_SIDE_FILE_BYTES = 4 * 1024 * 1024
"""Bytes of a bundled side file (the bundled model's: 19 kB)."""
THUMB = 16
"""The thumbnail's side (the model input averaged over blocks)."""

FIXES = {(True, False): "flip_vertical", (True, True): "rotate_180",
         (False, True): "flip_horizontal"}
"""(upside down, mirrored) -> the transform that puts the image upright."""

TRANSFORMS = ("rotate_180", "flip_vertical", "flip_horizontal")
"""What a user may ask the app to do to an image before it is analysed (``orient``)."""

TRANSFORM_NOTES = {
    "rotate_180": N_("The image was rotated 180 degrees before analysis, as asked."),
    "flip_vertical": N_("The image was flipped top to bottom before analysis, as asked."),
    "flip_horizontal": N_("The image was mirrored left to right before analysis, as asked."),
}


BUNDLED_MODELS = DEFAULT_MODEL.parent
"""The only folder whose side files are read (the app's own package)."""


def side_file(model_path: str | Path) -> Path:
    """Where a model's heads lie when they are not inside it: MODEL.orientation.json."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".orientation.json")


def features(model_input: np.ndarray, cam: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """The heads' input for one image: CAM, embedding and thumbnail, flattened (float64)."""
    x = np.asarray(model_input, dtype=np.float64).reshape(model_input.shape[0],
                                                           model_input.shape[1])
    side = x.shape[0] - x.shape[0] % THUMB
    block = side // THUMB
    thumb = x[:side, :side].reshape(THUMB, block, THUMB, block).mean(axis=(1, 3))
    return np.concatenate([np.ravel(cam).astype(np.float64),
                           np.ravel(embedding).astype(np.float64), thumb.ravel()])


@dataclass(frozen=True)
class Verdict:
    """The heads' probabilities and what they mean for one image."""

    upside_down: float
    mirrored: float
    upside_down_flagged: bool
    mirrored_flagged: bool

    @property
    def fix(self) -> str | None:
        """The transform that would put the image upright (None when it looks upright).

        For an upside-down image the mirror head at an even call tells a 180-degree rotation
        from a top-bottom flip (97 % right on held-out training patients, where its warning
        threshold is kept strict for upright images)."""
        if self.upside_down_flagged:
            return FIXES[(True, self.mirrored >= 0.5)]
        return FIXES.get((False, self.mirrored_flagged))

    def to_json(self) -> dict:
        """The answer's ``orientation`` block."""
        return {"checked": True, "upside_down": round(self.upside_down, 4),
                "mirrored": round(self.mirrored, 4),
                "upside_down_flagged": self.upside_down_flagged,
                "mirrored_flagged": self.mirrored_flagged}


class OrientationCheck:
    """The two heads of a model file (standardise, dot product, logistic)."""

    def __init__(self, block: dict):
        self.mean = decode_array(block["mean"]).astype(np.float64)
        self.scale = decode_array(block["scale"]).astype(np.float64)
        self.heads = {name: (decode_array(h["weights"]).astype(np.float64), float(h["bias"]),
                             float(h["threshold"]))
                      for name, h in block["heads"].items()}
        if set(self.heads) != {"upside_down", "mirrored"}:
            raise ValueError("the orientation block needs the heads upside_down and mirrored")
        for w, _, _ in self.heads.values():
            if w.shape != self.mean.shape:
                raise ValueError("orientation head and feature scaling sizes differ")

    @classmethod
    def for_model(cls, metadata: dict, path: Path, sha256: str) -> OrientationCheck | None:
        """The check a model file carries, else the bundled side file made for exactly this
        file, else None (no check for that model)."""
        block = metadata.get(METADATA_KEY)
        if block:
            return cls(block)
        side = side_file(BUNDLED_MODELS / path.name)
        if side.is_file():
            block = bounded_json.load_file(side, max_bytes=MAX_SIDE_FILE_BYTES)
            if block.get("model_sha256") == sha256:
                return cls(block)
        return None

    def verdict(self, feats: np.ndarray) -> Verdict:
        """Probabilities of each head and whether they pass its threshold."""
        if feats.shape != self.mean.shape:
            raise ValueError(f"orientation features: {feats.shape}, expected {self.mean.shape}")
        z = (feats - self.mean) / self.scale
        p = {}
        for name, (w, b, _) in self.heads.items():
            p[name] = float(1.0 / (1.0 + np.exp(-np.clip(z @ w + b, -50, 50))))
        return Verdict(p["upside_down"], p["mirrored"],
                       p["upside_down"] >= self.heads["upside_down"][2],
                       p["mirrored"] >= self.heads["mirrored"][2])


def apply_transform(gray: Image.Image, name: str) -> Image.Image:
    """A PIL image turned as ``name`` (one of TRANSFORMS) says."""
    op = {"rotate_180": Image.Transpose.ROTATE_180,
          "flip_vertical": Image.Transpose.FLIP_TOP_BOTTOM,
          "flip_horizontal": Image.Transpose.FLIP_LEFT_RIGHT}[name]
    return gray.transpose(op)
