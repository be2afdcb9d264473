"""Tiny Kaggle-layout data sets made from the six real fixture X-rays (for fast tests)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pneumo.app.updates.model_store import REFERENCE_DIR

FIXTURES = REFERENCE_DIR  # the six real X-rays shipped as package data
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray"


def fixture_images() -> dict[str, list[Path]]:
    """The real fixture X-rays per class."""
    return {c: sorted((FIXTURES / c).glob("*.jpeg")) for c in ("NORMAL", "PNEUMONIA")}


def make_tiny_kaggle(root: Path, per_class: int = 24, images_per_patient: int = 2,
                     seed: int = 0) -> Path:
    """Write root/train/{NORMAL,PNEUMONIA}/ with perturbed copies named like real patients."""
    rng = np.random.default_rng(seed)
    for cls, files in fixture_images().items():
        d = root / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = Image.open(files[i % len(files)]).convert("L")
            if rng.random() < 0.5:
                base = ImageOps.mirror(base)
            base = base.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR)
            arr = np.asarray(base, dtype=np.float32) + rng.normal(0, 4, (224, 224))
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            patient, image = 100 + i // images_per_patient, i % images_per_patient
            name = (f"IM-{patient:04d}-{image + 1:04d}.jpeg" if cls == "NORMAL"
                    else f"person{patient}_bacteria_{i}.jpeg")
            img.save(d / name, quality=90)
    return root


def xray_variants(n_per_class: int, seed: int = 0) -> list[tuple[bytes, str]]:
    """Distinct real-X-ray JPEGs (the fixtures, then small rotations with noise) and labels.

    Labels are "normal" / "pneumonia" (the clinician's findings), NORMAL fixtures first.
    """
    rng = np.random.default_rng(seed)
    out = []
    for cls, files in fixture_images().items():
        for i in range(n_per_class):
            img = Image.open(files[i % len(files)]).convert("L")
            if i >= len(files):
                img = img.rotate(float(rng.uniform(-6, 6)), resample=Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 3, img.size[::-1])
                img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            out.append((buf.getvalue(), "pneumonia" if cls == "PNEUMONIA" else "normal"))
    return out
