"""Calibration of the "is it a chest X-ray?" checks on the real training X-rays (slow).

Measures on a seeded sample of shared/data/chest_xray/train (1000 images; set
PNEUMO_CALIBRATION_N=all for all 5216) how many real X-rays the cheap checks and the whole gate
with the model's OOD distance refuse (the refusal budget of reports/refusals: at most 0.1 %,
at least one allowed in a sample), that the same X-rays turned by 90 degrees are all refused,
and that every scikit-image sample picture is refused. Run as a script for the full report:

    PNEUMO_TEST_MODEL=... python tests/app/pipeline/test_checks_calibration.py [N|all]
"""

from __future__ import annotations

import io
import os
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # when run as a script

from apptools import SKIMAGE_PICTURES, skimage_png  # noqa: E402
from PIL import Image  # noqa: E402
from tinydata import SHARED_DATA  # noqa: E402

from pneumo.app.pipeline.checks import CHEST_TEMPLATE, cheap_checks, ood_findings  # noqa: E402
from pneumo.app.pipeline.decode import decode_image  # noqa: E402
from pneumo.app.pipeline.preprocess import to_model_input  # noqa: E402

TRAIN = SHARED_DATA / "train"
MAX_REFUSED_FRACTION = 0.001
"""The refusal budget for real training X-rays (all checks together)."""


def refusal_budget(n: int) -> int:
    """How many of n real X-rays may be refused (0.1 %, at least 1)."""
    return max(1, int(MAX_REFUSED_FRACTION * n))


def training_images(n: int | None, seed: int = 0) -> list[Path]:
    """A seeded sample (or all, n=None) of the real training X-rays."""
    paths = sorted(TRAIN.glob("*/*.jpeg"))
    random.Random(seed).shuffle(paths)
    return paths if n is None else paths[:n]


def build_template(n: int = 2000, seed: int = 0) -> np.ndarray:
    """The 16 x 16 mean chest X-ray (left-right symmetrised) used by pneumo.app.pipeline.checks."""
    acc = np.zeros((16, 16))
    paths = training_images(n, seed)
    for p in paths:
        acc += np.asarray(Image.open(p).convert("L").resize((16, 16), Image.BOX), dtype=np.float64)
    t = acc / len(paths)
    return np.round((t + t[:, ::-1]) / 2)


def calibrate(paths: list[Path], model=None) -> dict:
    """Pass rates of the cheap checks (and of the OOD gate when a model is given)."""
    cheap_fail: Counter = Counter()
    ood_fail = warn_ood = n_cheap_ok = rotated_passed = 0
    for p in paths:
        decoded = decode_image(p.read_bytes())
        res = cheap_checks(decoded)
        sideways = decoded.gray.transpose(Image.Transpose.ROTATE_90)
        rotated_passed += cheap_checks(decode_image(_png(sideways))).ok
        if not res.ok:
            cheap_fail[res.rejections[0].code] += 1
            continue
        n_cheap_ok += 1
        if model is not None and model.ood:
            out = model.run(to_model_input(decoded.gray, model.input_size)[None])
            rej, warn = ood_findings(float(model.ood_distance(out.embedding)[0]), model.ood)
            ood_fail += rej is not None
            warn_ood += warn is not None
    n = len(paths)
    return {"n": n, "cheap_pass_rate": n_cheap_ok / n, "cheap_failures": dict(cheap_fail),
            "full_pass_rate": (n_cheap_ok - ood_fail) / n, "ood_rejected": ood_fail,
            "ood_warned": warn_ood, "rotated_passed": rotated_passed}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pictures_report(model=None) -> list[dict]:
    """For each scikit-image picture: the cheap-check verdicts and the OOD distance."""
    rows = []
    for name in SKIMAGE_PICTURES:
        try:
            data = skimage_png(name)
        except Exception:
            continue
        decoded = decode_image(data)
        res = cheap_checks(decoded)
        row = {"name": name, "cheap": [f.code for f in res.rejections]}
        if model is not None:
            out = model.run(to_model_input(decoded.gray, model.input_size)[None])
            d = float(model.ood_distance(out.embedding)[0])
            row["ood_distance"] = d
            row["ood_rejects"] = ood_findings(d, model.ood)[0] is not None
        rows.append(row)
    return rows


def _n() -> int | None:
    raw = os.environ.get("PNEUMO_CALIBRATION_N", "1000")
    return None if raw == "all" else int(raw)


needs_data = pytest.mark.skipif(not TRAIN.is_dir(), reason=f"no training data at {TRAIN}")


@pytest.mark.slow
@needs_data
def test_real_xrays_pass_cheap_checks():
    stats = calibrate(training_images(_n()))
    print(stats)
    assert sum(stats["cheap_failures"].values()) <= refusal_budget(stats["n"]), stats
    assert stats["rotated_passed"] == 0, stats  # every one of them turned by 90 degrees refused


@pytest.mark.slow
@needs_data
def test_real_xrays_pass_whole_gate(model):
    stats = calibrate(training_images(min(_n() or 10**9, 1000)), model)
    print(stats)
    refused = stats["n"] - round(stats["full_pass_rate"] * stats["n"])
    assert refused <= refusal_budget(stats["n"]), stats


@pytest.mark.slow
@needs_data
def test_shipped_template_matches_training_data():
    assert np.abs(build_template() - CHEST_TEMPLATE).max() <= 1.0


def test_every_skimage_picture_refused(model):
    rows = pictures_report(model)
    assert len(rows) >= 20
    for row in rows:
        assert row["cheap"] or row["ood_rejects"], row


if __name__ == "__main__":
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel

    arg = sys.argv[1] if len(sys.argv) > 1 else "1000"
    m = OnnxModel(os.environ.get("PNEUMO_TEST_MODEL", str(DEFAULT_MODEL)))
    paths = training_images(None if arg == "all" else int(arg))
    print(f"model {m.name} {m.version}; OOD {m.ood.get('warn_distance')} / "
          f"{m.ood.get('reject_distance')}")
    print("real X-rays:", calibrate(paths, m))
    for r in pictures_report(m):
        print(f"  {r['name']:22s} cheap={','.join(r['cheap']) or '-':45s} "
              f"ood={r['ood_distance']:10.1f} ood_rejects={r['ood_rejects']}")
