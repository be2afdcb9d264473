"""Has this clinic's stream of images drifted from the ones the model was validated on?

The model file carries ``drift_reference`` (written at export, `export.drift_reference`):
quantiles of the out-of-distribution distance and of the calibrated score on the images the
operating points were chosen on, their borderline rate and refusal rate. The check compares
the last `WINDOW` images (answered or refused) with it:

- **image appearance**: the distribution of the out-of-distribution distance, within each
  called class (two-sample Kolmogorov-Smirnov against the reference quantiles of that class,
  Bonferroni-combined). A new X-ray unit, other exposure or post-processing moves it; a
  clinic that simply sees fewer or more children with pneumonia does not;
- **refusals**: the share of images refused as "not a chest X-ray" (one-sided binomial test
  against the reference rate, floored at 1%);
- **borderline answers**: the share between the screening and balanced thresholds (one-sided
  binomial test against the reference rate, floored at 2%).

Each test warns at p < 0.001. The check runs after every answer, so it looks many times:
a strict level keeps false alarms rare (about one in a thousand looks when nothing changed),
and the shifts that matter (a new unit, inverted or heavily processed images) give p-values
far below it within 50-100 images. The score distribution is shown but never warns on its
own: it also moves when more or fewer children with pneumonia come in, which is not drift.
"""

from __future__ import annotations

import math

import numpy as np

from pneumo.app.i18n import N_, _
from pneumo.app.pipeline.outcome import in_review_band

WINDOW = 100
"""How many recent answers are compared (the newest)."""
MIN_ANSWERS = 50
"""Fewest recent images (answered or refused) before the check says anything."""
MIN_PER_CLASS = 20
"""Fewest answers of a called class for its appearance test (and in all, for borderline)."""
ALPHA = 0.001
"""p-value below which a test warns."""
REFUSAL_FLOOR = 0.01
BORDERLINE_FLOOR = 0.02

ADVICE = N_("Check the X-ray unit and its settings (a new unit, other exposure or image "
          "processing), and that images are frontal chest X-rays of children. If the change is "
          "intended, confirm about 100 results and set this clinic's thresholds again.")


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov p-value for statistic d (sizes n, m)."""
    if d <= 0:
        return 1.0
    ne = n * m / (n + m)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    total = sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2.0 * total)))


def ks_against_quantiles(sample: np.ndarray, quantiles: list[float]) -> float:
    """KS statistic between a sample and a reference given by its quantiles.

    Both are rounded to 6 decimals first: stored answers and quantiles of the same
    (quantised, hence tied) scores must compare equal.
    """
    x = np.sort(np.round(np.asarray(sample, dtype=np.float64), 6))
    q = np.sort(np.round(np.asarray(quantiles, dtype=np.float64), 6))
    points = np.concatenate([x, q])
    f_sample = np.searchsorted(x, points, side="right") / len(x)
    f_ref = np.searchsorted(q, points, side="right") / len(q)
    return float(np.abs(f_sample - f_ref).max())


def binomial_upper(k: int, n: int, rate: float) -> float:
    """P(X >= k) for X ~ Binomial(n, rate)."""
    if k <= 0:
        return 1.0
    rate = min(max(rate, 1e-12), 1 - 1e-12)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                 + i * math.log(rate) + (n - i) * math.log1p(-rate) for i in range(k, n + 1)]
    top = max(log_terms)
    return float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms)))


def _rate_check(name: str, k: int, n: int, ref: float, floor: float, what: str) -> dict:
    """A one-sided binomial check of an observed share against a reference rate."""
    base = max(float(ref), floor)
    p = binomial_upper(k, n, base)
    return {"name": name, "observed": round(k / n, 4) if n else None,
            "reference": round(float(ref), 4), "p_value": p, "drift": p < ALPHA,
            "what": what}


def _appearance(answers: list[dict], reference: dict, cut: float) -> dict | None:
    """KS of the out-of-distribution distance within each called class (Bonferroni-combined).

    Comparing NORMAL-called with NORMAL-called and PNEUMONIA-called with PNEUMONIA-called
    images keeps a clinic with fewer (or more) children with pneumonia from looking drifted.
    """
    by_label = reference.get("ood_quantiles_by_label") or {}
    n_ref = reference.get("n_by_label") or {}
    strata = []
    for label, positive in (("NORMAL", False), ("PNEUMONIA", True)):
        ood = [r["ood_distance"] for r in answers if r.get("ood_distance") is not None
               and (float(r["probability"]) >= cut) == positive]
        if len(ood) >= MIN_PER_CLASS and by_label.get(label) and n_ref.get(label):
            d = ks_against_quantiles(np.array(ood), by_label[label])
            strata.append({"label": label, "n": len(ood), "statistic": round(d, 4),
                           "p_value": ks_pvalue(d, len(ood), int(n_ref[label])),
                           "median": round(float(np.median(ood)), 3),
                           "reference_median": round(float(np.median(by_label[label])), 3)})
    if not strata:
        return None
    p = min(1.0, min(s["p_value"] for s in strata) * len(strata))
    return {"name": "image_appearance", "p_value": p, "drift": p < ALPHA, "by_class": strata,
            "what": N_("their appearance has changed (exposure, contrast or image processing)")}


def check(answers: list[dict], refusal_times: list[str], reference: dict | None,
          thresholds: dict[str, float], cut: float, newest: dict | None = None) -> dict:
    """The drift status of the newest attempts against the reference.

    ``answers``: recent history records (newest first); ``refusal_times``: when recent images
    were refused (newest first); ``thresholds``: those in use (borderline band); ``cut``: the
    model's balanced threshold (splits answers by called class, as the reference was split);
    ``newest``: an answer not stored yet, counted as the newest attempt.
    """
    attempts = sorted([(r["created_at"], r) for r in answers]
                      + [(t, None) for t in refusal_times], key=lambda a: a[0],
                      reverse=True)
    attempts = ([("", newest)] if newest is not None else []) + attempts
    attempts = attempts[:WINDOW]
    window = [r for _t, r in attempts if r is not None]
    refused = sum(1 for _t, r in attempts if r is None)
    n = len(attempts)
    if not reference:
        return {"status": "unavailable", "n": n, "checks": [],
                "message": _("This model file has no reference statistics: drift is not checked.")}
    if n < MIN_ANSWERS:
        return {"status": "insufficient", "n": n, "needed": MIN_ANSWERS, "checks": [],
                "message": _("Drift is checked once %(count)s images have been analysed.",
                             count=MIN_ANSWERS)}
    checks = [_rate_check("refusals", refused, n, reference.get("refusal_rate", 0.0),
                          REFUSAL_FLOOR, N_("more images than usual are refused as not a "
                                            "chest X-ray"))]
    appearance = _appearance(window, reference, cut)
    if appearance is not None:
        checks.insert(0, appearance)
    info = {}
    if len(window) >= MIN_PER_CLASS:
        borderline = sum(1 for r in window if in_review_band(r["probability"], thresholds))
        checks.append(_rate_check("borderline", borderline, len(window),
                                  reference.get("borderline_rate", 0.0), BORDERLINE_FLOOR,
                                  N_("more answers than usual are unclear (review advised)")))
        if reference.get("score_quantiles"):
            scores = np.array([float(r["probability"]) for r in window])
            d = ks_against_quantiles(scores, reference["score_quantiles"])
            info = {"score_distribution": {
                "statistic": round(d, 4), "p_value": ks_pvalue(d, len(window), int(reference["n"])),
                "note": "shown only: it also moves with the share of children who have "
                        "pneumonia"}}
    drifted = [c for c in checks if c["drift"]]
    if drifted:  # in the request's language (the page's banner)
        message = _("Recent images differ from those the model was checked on: %(what)s. "
                    "%(advice)s", what="; ".join(_(c["what"]) for c in drifted), advice=_(ADVICE))
    else:
        message = _("Recent images look like those the model was checked on.")
    return {"status": "drift" if drifted else "ok", "n": n, "answered": len(window),
            "refused": refused, "window": WINDOW, "alpha": ALPHA, "checks": checks, **info,
            "reference_source": reference.get("source"), "message": message}
