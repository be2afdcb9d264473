"""A GAN's quality against its training steps (the curve that picks the checkpoint).

Every ``--eval-every`` steps the generator draws the same ``--eval-n`` images (fixed noise),
scored against the real training images of the class with `pneumo.train.gan_eval`: domain FID,
precision and recall (k = 3), and memorisation (best SSIM among the 5 nearest real images at
64 px). The feature model (the bundled classifier's pooled embedding by default) is pinned by
its sha256 in ``quality_model.json``: a resumed run with another feature model is refused, so
the yardstick does not move mid-run. Rows go to ``quality.csv``; ``quality.png`` is redrawn.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.train.gan_eval import embed, frechet_distance, memorisation, precision_recall

log = logging.getLogger(__name__)

FIELDS = ("step", "domain_fid", "precision", "recall", "near_copy_fraction", "best_ssim_p50",
          "best_ssim_max", "n_synthetic", "n_real", "seconds")
SMALL = 64
"""Side at which memorisation (SSIM) is measured."""


def _resize(u8: np.ndarray, size: int) -> np.ndarray:
    """uint8 images (N, S, S) squashed to size x size, bicubic (the preprocessing's resize)."""
    from PIL import Image

    from pneumo.app.pipeline.decoded import squash

    return np.stack([np.asarray(squash(Image.fromarray(im), size)) for im in u8])


class QualityCurve:
    """Scores the trainer's generator on fixed noise; one row of quality.csv per call."""

    def __init__(self, out: str | Path, real_u8: np.ndarray, model_path: str | Path, *,
                 n: int = 500, seed: int = 0, max_real: int = 1500):
        from pneumo.app.pipeline.onnx_model import OnnxModel, file_sha256

        self.out = Path(out)
        self.model = OnnxModel(model_path, intra_op_threads=0)
        pin = {"feature_model": str(model_path), "sha256": file_sha256(model_path)}
        pinned = self.out / "quality_model.json"
        if pinned.exists():
            before = json.loads(pinned.read_text())
            if before["sha256"] != pin["sha256"]:
                raise SystemExit(f"the quality curve of {self.out} was measured with feature model "
                                 f"sha256 {before['sha256'][:12]}..., not {pin['sha256'][:12]}...: "
                                 "resume with the same --eval-model, or start a new run")
        else:
            pinned.write_text(json.dumps(pin, indent=2))
        rng = np.random.default_rng(seed)
        if len(real_u8) > max_real:
            real_u8 = real_u8[np.sort(rng.choice(len(real_u8), max_real, replace=False))]
        self.real_f = embed(self.model, _resize(real_u8, self.model.input_size))
        self.real_px = _resize(real_u8, SMALL).astype(np.float64) / 255.0
        self.z = rng.standard_normal((n, 1)).astype(np.float32)  # widened to z_dim on first use
        self.n = n
        self.seed = seed

    def __call__(self, trainer: Any) -> dict:
        """Score the generator now; append the row and redraw the plot."""
        t0 = time.time()
        if self.z.shape[1] != trainer.cfg.z_dim:
            self.z = np.random.default_rng([self.seed, 1]).standard_normal(
                (self.n, trainer.cfg.z_dim)).astype(np.float32)
        labels = np.zeros(self.n, dtype=np.int32)  # the first class (the one being synthesised)
        fake = np.round(np.clip(trainer.generate(self.z, labels)[..., 0], 0, 1) * 255)
        fake = fake.astype(np.uint8)
        fake_f = embed(self.model, _resize(fake, self.model.input_size))
        mem = memorisation(self.real_f, fake_f, self.real_px,
                           _resize(fake, SMALL).astype(np.float64) / 255.0)
        pr = precision_recall(self.real_f, fake_f)
        row = {"step": trainer.step, "domain_fid": frechet_distance(self.real_f, fake_f),
               "precision": pr["precision"], "recall": pr["recall"],
               "near_copy_fraction": mem["near_copy_fraction"],
               "best_ssim_p50": float(np.median(mem["best_ssim"])),
               "best_ssim_max": float(mem["best_ssim"].max()), "n_synthetic": self.n,
               "n_real": len(self.real_f), "seconds": round(time.time() - t0, 1)}
        if self._append(row):
            trainer.save_checkpoint(best=True)
        log.info("quality at step %d: domain FID %.2f, precision %.3f, recall %.3f, near copies "
                 "%.1f %% (%.0f s)", row["step"], row["domain_fid"], row["precision"],
                 row["recall"], 100 * row["near_copy_fraction"], row["seconds"])
        return row

    def _append(self, row: dict) -> bool:
        """Add the row (replacing later ones of an interrupted run); True if it is the best."""
        path = self.out / "quality.csv"
        rows = read_curve(path)
        rows = [r for r in rows if int(r["step"]) < row["step"]] + [row]  # a resumed run
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        try:
            plot_curve(rows, self.out / "quality.png")
        except ImportError:
            log.info("matplotlib missing: quality.png not drawn")
        return best_step(rows) == row["step"]


def read_curve(path: str | Path) -> list[dict]:
    """The rows of a quality.csv (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def best_step(rows: list[dict]) -> int:
    """The checkpoint the curve picks: the lowest domain FID (the earliest among ties)."""
    return int(min(rows, key=lambda r: float(r["domain_fid"]))["step"])


def plot_curve(rows: list[dict], path: Path) -> None:
    """Domain FID and precision/recall against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, [float(r["domain_fid"]) for r in rows], "o-")
    a.set(xlabel="step", ylabel="domain FID (lower is better)", title="Frechet distance")
    for key in ("precision", "recall", "near_copy_fraction"):
        b.plot(steps, [float(r[key]) for r in rows], "o-", label=key.replace("_", " "))
    b.set(xlabel="step", ylim=(0, 1), title="precision / recall / near copies")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
