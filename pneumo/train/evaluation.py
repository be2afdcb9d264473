"""`Evaluation`: the result of `train.evaluate.evaluate`, read by the table and the report.

Kept apart from `train.evaluate` (which loads models and runs them) so that the report
(`train.report`) can read a result without importing the code that makes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pneumo.train.data import CLASS_NAMES

DEFAULT_LABEL = "evaluation data"


@dataclass
class Evaluation:
    """One model judged on one labelled image set, with the per-image labels and probabilities."""

    model: dict
    """Name, version, input size and thresholds of the model (from its metadata)."""
    labels: np.ndarray
    """True class per image (0 NORMAL, 1 PNEUMONIA)."""
    probabilities: np.ndarray
    """The model's probability of PNEUMONIA per image."""
    operating_points: dict[str, dict] = field(default_factory=dict)
    """Mode -> metrics at that threshold, each with its 95% bootstrap CIs under ``ci95``."""
    acquisition_shifts: dict[str, dict] | None = None
    """Shift name -> metrics at the balanced threshold (only when shifts were asked for)."""
    data: str | None = None
    """Where the images came from."""
    label: str | None = None
    """What the set is called in tables ("internal validation", external validation...)."""
    external: Evaluation | None = None
    """The same model judged on an external set, reported beside this one."""

    @property
    def n(self) -> int:
        """Number of images."""
        return int(len(self.labels))

    @property
    def n_per_class(self) -> dict[str, int]:
        """Images per class name."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(CLASS_NAMES)}

    @property
    def title(self) -> str:
        """The set's label, or a generic name when it has none."""
        return self.label or DEFAULT_LABEL

    def to_json(self) -> dict:
        """The JSON document (`pneumo evaluate --json`, metrics.json): everything but the
        per-image arrays."""
        doc: dict = {"model": self.model, "n": self.n, "n_per_class": self.n_per_class,
                     "operating_points": self.operating_points}
        if self.acquisition_shifts is not None:
            doc["acquisition_shifts"] = self.acquisition_shifts
        if self.data is not None:
            doc["data"] = self.data
        if self.label is not None:
            doc["label"] = self.label
        if self.external is not None:
            doc["external"] = self.external.to_json()
        return doc


def format_table(result: Evaluation) -> str:
    """A plain-text table of the metrics with CIs (and the external set's, when evaluated)."""
    lines = [f"[{result.title}]", f"n = {result.n} ({result.n_per_class})"]
    for mode, m in result.operating_points.items():
        lines.append(f"[{mode}] threshold {m['threshold']:.4f}")
        for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc"):
            lo, hi = m["ci95"].get(k, [float("nan")] * 2)
            lines.append(f"  {k:<12} {m[k]:.4f}  (95% CI {lo:.4f}-{hi:.4f})")
        lines.append(f"  confusion    TN {m['tn']}  FP {m['fp']}  FN {m['fn']}  TP {m['tp']}")
    if result.acquisition_shifts is not None:
        lines.append("[acquisition shifts, balanced threshold]  accuracy  sensitivity  "
                     "specificity  AUC")
        for name, m in result.acquisition_shifts.items():
            lines.append(f"  {name:<16} {m['accuracy']:.4f}    {m['sensitivity']:.4f}       "
                         f"{m['specificity']:.4f}       {m['auc']:.4f}")
    if result.external is not None:
        lines += ["", format_table(result.external)]
    return "\n".join(lines)
