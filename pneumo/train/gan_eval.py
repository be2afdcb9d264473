"""Quality of synthetic X-rays: domain FID, precision/recall, memorisation check.

Inception weights cannot be downloaded here, so features come from our own classifier
trained on the real X-rays (the ONNX model's pooled embedding): the Frechet distance is a
*domain* FID, comparable between GANs evaluated with the same classifier, not with
published FIDs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NEAR_COPY_SSIM = 0.90


def embed(model, images_u8: np.ndarray, batch: int = 64) -> np.ndarray:
    """Embeddings (N, C) of uint8 images already at the model's input size."""
    parts = [model.run(images_u8[i:i + batch].astype(np.float32)[..., None] / 255.0).embedding
             for i in range(0, len(images_u8), batch)]
    return np.concatenate(parts).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d, 0))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019) with k-NN manifolds."""
    def radii(x):
        d = _pairwise(x, x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    d_fr = _pairwise(fake, real)
    precision = float(np.mean((d_fr <= r_real[None, :]).any(axis=1)))
    recall = float(np.mean((d_fr.T <= r_fake[None, :]).any(axis=1)))
    return {"precision": precision, "recall": recall, "k": k}


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two images in [0, 1] (7x7 uniform windows)."""
    from scipy.ndimage import uniform_filter

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = uniform_filter(a, 7), uniform_filter(b, 7)
    va = uniform_filter(a * a, 7) - mu_a ** 2
    vb = uniform_filter(b * b, 7) - mu_b ** 2
    cov = uniform_filter(a * b, 7) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return float(s.mean())


def memorisation(real_f: np.ndarray, fake_f: np.ndarray, real_px: np.ndarray,
                 fake_px: np.ndarray, top: int = 5) -> dict:
    """For every synthetic image: nearest real image (features) and best SSIM among `top`."""
    d = _pairwise(fake_f, real_f)
    order = np.argsort(d, axis=1)[:, :top]
    best_ssim, best_idx = np.zeros(len(fake_f)), np.zeros(len(fake_f), dtype=int)
    for i, cand in enumerate(order):
        scores = [ssim(fake_px[i], real_px[j]) for j in cand]
        j = int(np.argmax(scores))
        best_ssim[i], best_idx[i] = scores[j], cand[j]
    rr = _pairwise(real_f, real_f)
    np.fill_diagonal(rr, np.inf)
    return {
        "nearest_feature_distance": d[np.arange(len(d)), order[:, 0]],
        "real_real_nn_distance_median": float(np.median(rr.min(axis=1))),
        "best_ssim": best_ssim,
        "best_real_index": best_idx,
        "near_copy_fraction": float(np.mean(best_ssim >= NEAR_COPY_SSIM)),
    }


def save_pairs_png(fake_px: np.ndarray, real_px: np.ndarray, mem: dict, path: Path,
                   n: int = 8) -> None:
    """The n synthetic images most similar to a real one, side by side with it."""
    from PIL import Image

    worst = np.argsort(-mem["best_ssim"])[:n]
    s = fake_px.shape[1]
    canvas = np.zeros((2 * s, n * s), dtype=np.float64)
    for col, i in enumerate(worst):
        canvas[:s, col * s:(col + 1) * s] = fake_px[i]
        canvas[s:, col * s:(col + 1) * s] = real_px[mem["best_real_index"][i]]
    Image.fromarray(np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)).save(path)


def evaluate_gan(real_dir: str | Path, synthetic_dir: str | Path, model_path: str | Path,
                 out: str | Path, *, class_name: str = "NORMAL", max_real: int = 1500,
                 seed: int = 0) -> dict:
    """`pneumo gan evaluate`: write gan_quality.json/.md and closest_pairs.png into out."""
    from pneumo.app.pipeline.onnx_model import OnnxModel
    from pneumo.train.data import CLASS_NAMES, list_class_folder, load_arrays, make_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = OnnxModel(model_path, intra_op_threads=0)
    label = CLASS_NAMES.index(class_name)
    real_s = [s for s in make_split(real_dir).train if s.label == label]
    rng = np.random.default_rng(seed)
    if len(real_s) > max_real:
        real_s = [real_s[i] for i in sorted(rng.choice(len(real_s), max_real, replace=False))]
    fake_s = [s for s in list_class_folder(Path(synthetic_dir)) if s.label == label]
    if len(fake_s) < 10:
        raise ValueError(f"need at least 10 synthetic {class_name} images in {synthetic_dir}")
    size = model.input_size
    real_u8, _ = load_arrays(real_s, size, progress=False)
    fake_u8, _ = load_arrays(fake_s, size, progress=False)
    real_f, fake_f = embed(model, real_u8), embed(model, fake_u8)
    small = 64
    real_px = load_arrays(real_s, small, progress=False)[0].astype(np.float64) / 255
    fake_px = load_arrays(fake_s, small, progress=False)[0].astype(np.float64) / 255
    half = len(real_f) // 2
    mem = memorisation(real_f, fake_f, real_px, fake_px)
    save_pairs_png(fake_px, real_px, mem, out / "closest_pairs.png")
    report = {
        "class": class_name,
        "n_real": len(real_f),
        "n_synthetic": len(fake_f),
        "feature_model": str(model_path),
        "domain_fid": frechet_distance(real_f, fake_f),
        "domain_fid_real_vs_real_halves": frechet_distance(real_f[:half], real_f[half:]),
        **precision_recall(real_f, fake_f),
        "near_copy_ssim_threshold": NEAR_COPY_SSIM,
        "near_copy_fraction": mem["near_copy_fraction"],
        "best_ssim_p50": float(np.median(mem["best_ssim"])),
        "best_ssim_max": float(mem["best_ssim"].max()),
        "nearest_feature_distance_p50": float(np.median(mem["nearest_feature_distance"])),
        "real_real_nn_distance_median": mem["real_real_nn_distance_median"],
    }
    (out / "gan_quality.json").write_text(json.dumps(report, indent=2))
    (out / "gan_quality.md").write_text("\n".join([
        f"# Synthetic {class_name} X-rays: quality", "",
        f"Features: the pooled embedding of `{model_path}` (a classifier trained on the real "
        "X-rays), so the FID below is a **domain FID**: comparable between GANs scored with "
        "the same classifier, not with published Inception FIDs.", "",
        "| measure | value |", "|---|---|",
        f"| domain FID (real vs synthetic) | {report['domain_fid']:.2f} |",
        f"| domain FID (real half vs real half, floor) | "
        f"{report['domain_fid_real_vs_real_halves']:.2f} |",
        f"| precision (k={report['k']}) | {report['precision']:.3f} |",
        f"| recall (k={report['k']}) | {report['recall']:.3f} |",
        f"| near copies (SSIM >= {NEAR_COPY_SSIM} to a real training image) | "
        f"{report['near_copy_fraction']:.2%} |",
        f"| best SSIM to a real image: median / max | {report['best_ssim_p50']:.3f} / "
        f"{report['best_ssim_max']:.3f} |", "",
        "Closest synthetic/real pairs (top: synthetic, bottom: its most similar real image):",
        "", "![closest pairs](closest_pairs.png)", ""]))
    return report
