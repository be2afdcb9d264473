"""Which augmentations a run uses and how strong they are (no framework imported here).

Geometric: the seed paper's rotation, zoom, shear and horizontal flip, plus a small shift
(positioning). Photometric ("acquisition"): exposure (brightness), contrast, gamma,
sensor noise and reduced resolution, because the official test images differ from the
training images in exactly those ways. Two implementations apply a config to a batch:
`train.augment_tf` inside the tf.data pipeline (TensorFlow backend, stateless TF draws) and
`train.augment_keras` with keras.ops (any Keras backend, e.g. JAX on a GPU machine without
TensorFlow; numpy draws). Both use the same transforms, ranges and order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class AugmentConfig:
    """Which augmentations are on and how strong they are."""

    rotation_deg: float = 10.0
    zoom: float = 0.10
    shear_deg: float = 8.0
    shift: float = 0.06
    flip: bool = True
    brightness: float = 0.10
    contrast: float = 0.25
    gamma: float = 0.30
    noise: float = 0.03
    lowres: float = 0.3
    erasing: float = 0.0  # probability of one random rectangle set to the image mean

    @classmethod
    def none(cls) -> AugmentConfig:
        """Everything off."""
        return cls(**{f.name: (False if f.type in ("bool", bool) else 0.0) for f in fields(cls)})

    @classmethod
    def seed_paper(cls) -> AugmentConfig:
        """Only the seed paper's set: rotation, zoom, shear, horizontal flip."""
        cfg = cls.none()
        cfg.rotation_deg, cfg.zoom, cfg.shear_deg, cfg.flip = 10.0, 0.10, 8.0, True
        return cfg

    @classmethod
    def from_name(cls, name: str) -> AugmentConfig:
        """'none', 'seed' (geometric only) or 'full' (geometric + acquisition)."""
        table = {"none": cls.none, "seed": cls.seed_paper, "full": cls}
        if name not in table:
            raise ValueError(f"unknown augmentation preset {name!r}; use one of {sorted(table)}")
        return table[name]()

    def with_overrides(self, disable: list[str] | None) -> AugmentConfig:
        """A copy with the named transforms switched off."""
        cfg = AugmentConfig(**asdict(self))
        for name in disable or []:
            key = {"rotation": "rotation_deg", "shear": "shear_deg"}.get(name, name)
            if not hasattr(cfg, key):
                raise ValueError(f"unknown augmentation {name!r}")
            setattr(cfg, key, False if isinstance(getattr(cfg, key), bool) else 0.0)
        return cfg

    def with_values(self, assignments: list[str] | None) -> AugmentConfig:
        """A copy with NAME=VALUE assignments applied (e.g. 'gamma=0.5', 'erasing=0.5')."""
        cfg = AugmentConfig(**asdict(self))
        for item in assignments or []:
            name, sep, value = item.partition("=")
            key = {"rotation": "rotation_deg", "shear": "shear_deg"}.get(name.strip(), name.strip())
            if not sep or not hasattr(cfg, key):
                raise ValueError(f"bad augmentation setting {item!r}; use NAME=VALUE with NAME "
                                 f"one of {[f.name for f in fields(cfg)]}")
            current = getattr(cfg, key)
            setattr(cfg, key, value.strip().lower() in ("1", "true", "yes")
                    if isinstance(current, bool) else float(value))
        return cfg

    @property
    def active(self) -> bool:
        """Whether any transform is on."""
        return any(bool(v) for v in asdict(self).values())


def affine_coefficients(theta: Any, zoom: Any, shear: Any, tx: Any, ty: Any, flip: Any,
                        size: int, xp: Any) -> Any:
    """Per-image 8-parameter projective transforms (output -> input coordinates), (n, 8).

    The per-image draws (radians, zoom factor, pixels, +-1) come from either
    implementation; `xp` is its array module (numpy or tensorflow).
    """
    c = (size - 1) / 2.0
    cos, sin = xp.cos(theta), xp.sin(theta)
    # input = A @ (output - c) + c + t, with A = R(theta) @ Shear @ diag(flip, 1) / zoom
    a00 = (cos * flip) / zoom
    a01 = (cos * xp.tan(shear) - sin) / zoom
    a10 = (sin * flip) / zoom
    a11 = (sin * xp.tan(shear) + cos) / zoom
    b0 = c - a00 * c - a01 * c + tx
    b1 = c - a10 * c - a11 * c + ty
    zeros = xp.zeros_like(a00)
    return xp.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)
