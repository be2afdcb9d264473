"""Kaggle-layout chest X-ray data: file listing, patient-grouped split, cached arrays.

Nothing here imports TensorFlow; `train.tf_data` builds the tf.data input from these arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pneumo.app.pipeline.decoded import IMAGE_SUFFIXES
from pneumo.app.pipeline.preprocess import load_uint8

log = logging.getLogger(__name__)

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
EXTERNAL_LABEL = "external validation (half of the official test split)"
"""How every figure measured on ../shared/data/external_val is named (never 'test')."""

_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: str
    label: int  # 0 = NORMAL, 1 = PNEUMONIA

    @property
    def name(self) -> str:
        """The file name."""
        return Path(self.path).name


def patient_id(filename: str) -> str:
    """The patient a Kaggle file name belongs to (personN_ or [NORMAL2-]IM-xxxx prefix)."""
    stem = Path(filename).name
    for pattern in (_PERSON, _NORMAL):
        m = pattern.match(stem)
        if m:
            return m.group(1).upper()
    return Path(stem).stem.upper()  # unknown scheme: every file is its own patient


def list_class_folder(folder: Path) -> list[Sample]:
    """All images under folder/NORMAL and folder/PNEUMONIA, sorted by name."""
    samples: list[Sample] = []
    for label, cls in enumerate(CLASS_NAMES):
        d = folder / cls
        if not d.is_dir():
            continue
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        samples += [Sample(str(p), label) for p in files]
    return samples


def resolve_split_dirs(data: str | Path) -> dict[str, Path]:
    """Find pneumo/train/val/test folders in a Kaggle layout (or treat DIR itself as one split)."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if any((root / c).is_dir() for c in CLASS_NAMES):
        return {"data": root}
    for candidate in (root, root / "chest_xray"):
        found = {s: candidate / s for s in ("train", "val", "test") if (candidate / s).is_dir()}
        if found:
            return found
    raise FileNotFoundError(
        f"{root} has neither NORMAL/ and PNEUMONIA/ nor train/ val/ test/ folders"
    )


@dataclass
class Split:
    """A patient-grouped pneumo/train/validation split, JSON-serialisable."""

    seed: int
    val_fraction: float
    train: list[Sample]
    val: list[Sample]

    def to_json(self) -> dict:
        """Plain-JSON form (paths and labels)."""
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "train": [asdict(s) for s in self.train],
            "val": [asdict(s) for s in self.val],
        }

    @classmethod
    def from_json(cls, d: dict) -> Split:
        """Inverse of to_json."""
        return cls(
            seed=d["seed"],
            val_fraction=d["val_fraction"],
            train=[Sample(**s) for s in d["train"]],
            val=[Sample(**s) for s in d["val"]],
        )


def grouped_split(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 42) -> Split:
    """Seeded split by patient, stratified by class: no patient on both sides."""
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in range(len(CLASS_NAMES)):
        groups: dict[str, list[Sample]] = {}
        for s in samples:
            if s.label == label:
                groups.setdefault(patient_id(s.name), []).append(s)
        ids = sorted(groups)
        rng.shuffle(ids)
        n_images = sum(len(g) for g in groups.values())
        target = val_fraction * n_images
        taken = 0
        for pid in ids:
            if taken < target:
                val += groups[pid]
                taken += len(groups[pid])
            else:
                train += groups[pid]
    key = lambda s: (s.label, s.name)  # noqa: E731
    return Split(seed, val_fraction, sorted(train, key=key), sorted(val, key=key))


def make_split(data: str | Path, val_fraction: float = 0.2, seed: int = 42) -> Split:
    """The project's split of a Kaggle folder: grouped val from train, plus any val/ folder."""
    dirs = resolve_split_dirs(data)
    train_dir = dirs.get("train") or dirs.get("data")
    if train_dir is None:
        raise FileNotFoundError(f"no train/ folder under {data}")
    samples = list_class_folder(train_dir)
    if not samples:
        raise FileNotFoundError(f"no images under {train_dir}/NORMAL or /PNEUMONIA")
    split = grouped_split(samples, val_fraction, seed)
    if "val" in dirs:  # the official val (16 images) is added, never used instead
        split.val += list_class_folder(dirs["val"])
    return split


def class_weights(labels: Iterable[int]) -> dict[int, float]:
    """Balanced class weights n / (k * n_c), as in scikit-learn."""
    labels = np.asarray(list(labels))
    n, k = len(labels), len(CLASS_NAMES)
    return {c: float(n / (k * max(1, int((labels == c).sum())))) for c in range(k)}


def load_arrays(samples: Sequence[Sample], size: int, *, workers: int = 4,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode every file once through the shared preprocessing: (N, S, S) uint8, (N,) int."""
    x = np.zeros((len(samples), size, size), dtype=np.uint8)
    y = np.array([s.label for s in samples], dtype=np.int32)

    def work(i: int) -> None:
        x[i] = load_uint8(samples[i].path, size)

    step = max(1, len(samples) // 10)
    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(work, range(len(samples))), 1):
            if progress and (done % step == 0 or done == len(samples)):
                log.info("loaded %d/%d images", done, len(samples))
    return x, y


def cached_arrays(samples: Sequence[Sample], size: int, cache_dir: str | Path | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """load_arrays with an on-disk .npz cache keyed by the file list and size."""
    if cache_dir is None:
        return load_arrays(samples, size)
    key = hashlib.sha256(
        json.dumps([size] + [[s.path, s.label] for s in samples]).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / f"arrays-{size}-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["x"], z["y"]
    x, y = load_arrays(samples, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(path)
    return x, y


def epoch_order(y: np.ndarray, *, seed: int, epoch: int, balanced: bool = False) -> np.ndarray:
    """The image order of one epoch: a permutation, or (balanced) as many draws of each class.

    Balanced sampling draws len(y) indices, half from each class (with replacement for the
    smaller one), so every batch is about 50:50 without loss weights.
    """
    rng = np.random.default_rng([seed, epoch])
    if not balanced:
        return rng.permutation(len(y))
    half = len(y) // 2
    parts = [rng.choice(np.flatnonzero(y == c), size=n, replace=True)
             for c, n in ((0, half), (1, len(y) - half))]
    return rng.permutation(np.concatenate(parts))


def manifest_sha256(samples: Sequence[Sample]) -> str:
    """A hash of the training files (names, labels and bytes): which data made a model."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: (s.label, s.name)):
        h.update(f"{s.label}:{s.name}:".encode())
        h.update(hashlib.sha256(Path(s.path).read_bytes()).digest())
    return h.hexdigest()


EXTERNAL_README_TITLE = "# External validation set"
"""How the external validation folder's README starts (../shared/data/external_val)."""


def is_external_val(folder: str | Path) -> bool:
    """Whether `folder` is (inside) an external validation folder: by name or by its README."""
    path = Path(folder).resolve()
    if "external_val" in path.parts:
        return True
    for d in (path, *path.parents):
        readme = d / "README.md"
        try:
            if readme.is_file() and readme.read_text(encoding="utf-8", errors="replace"
                                                     ).startswith(EXTERNAL_README_TITLE):
                return True
        except OSError:
            continue
    return False


def refuse_external_val(folder: str | Path | None, role: str,
                        external: str | Path | None = None) -> None:
    """Raise ValueError if `folder` is external validation (or overlaps `external`).

    External validation (half of the official test split) is never trained on, augmented
    from or fed to a GAN.
    """
    if not folder:
        return
    path = Path(folder).resolve()
    overlaps = False
    if external:
        ext = Path(external).resolve()
        overlaps = path == ext or ext in path.parents or path in ext.parents
    if overlaps or is_external_val(path):
        raise ValueError(f"{folder} is external validation (half of the official test split); "
                         f"it must never be used as {role}")
