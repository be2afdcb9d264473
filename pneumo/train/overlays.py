"""Burned-in annotations as an augmentation: text an X-ray unit prints into the image.

The external validation images that the models over-call most are normal X-rays carrying
the unit's burned-in text (tube voltage such as "KV59", a time stamp, side markers) in their
corners; in the training split such text is rarer on NORMAL images than on PNEUMONIA ones,
so a network can learn it as a shortcut. Writing random text of that kind into the corners
of training images of BOTH classes takes the shortcut away. Text is drawn at the dataset's
224 px scale and scaled down with the image, so it looks as it would after the app's own
preprocessing. Pure numpy + Pillow (no TensorFlow); deterministic given the seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pneumo.app.pipeline.decoded import DATASET_SIZE


def _random_text(rng: np.random.Generator) -> str:
    kind = rng.integers(0, 6)
    if kind == 0:
        return f"KV{rng.integers(50, 95)}"
    if kind == 1:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    if kind == 2:
        return str(rng.choice(["R", "L", "AP", "PA", "SUPINE"]))
    if kind == 3:
        return f"mAs {rng.integers(1, 20)}.{rng.integers(0, 10)}"
    if kind == 4:
        return f"{rng.integers(2010, 2020)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    return "".join(str(d) for d in rng.integers(0, 10, rng.integers(3, 9)))


def text_layer(rng: np.random.Generator, size: int = DATASET_SIZE, max_items: int = 3
               ) -> np.ndarray:
    """An alpha mask (size x size, float32 in [0, 1]) with 1-3 short texts near the corners."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(1, max_items + 1))):
        font = ImageFont.load_default(size=float(rng.uniform(8, 16)))
        text = _random_text(rng)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left, bottom - top
        margin = rng.uniform(0.01, 0.06, 2) * size
        x = margin[0] if rng.random() < 0.5 else size - w - margin[0]
        y = margin[1] if rng.random() < 0.5 else size - h - margin[1]
        draw.text((x - left, y - top), text, fill=255, font=font)
    return np.asarray(layer, dtype=np.float32) / 255.0


def burn_in_text(images: np.ndarray, seed: int) -> np.ndarray:
    """A copy of uint8 images (N, S, S) with random unit text in their corners."""
    rng = np.random.default_rng([seed, 7919])
    out = np.empty_like(images)
    size = images.shape[-1]
    for i, img in enumerate(images):
        alpha = text_layer(rng)
        if size != DATASET_SIZE:
            alpha = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).resize(
                (size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        shade = float(rng.uniform(200, 255))  # burned-in text is near white
        mixed = img.astype(np.float32) * (1.0 - alpha) + shade * alpha
        out[i] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return out
