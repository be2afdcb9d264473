"""This clinic's operating thresholds (a site profile), kept beside the history.

A profile is accepted from a proposal (see `pneumo.app.clinic.site_thresholds`) and saved as
``site_calibration.json`` in the data folder: thresholds per mode, the rule that chose them,
how many confirmed cases, when, by whom, and the sha256 of the model it was made for. It is
used only with that model: after a model change the model's own thresholds apply again and
the page and ``/api/v1/calibration`` say why.

A proposal that the guard rail blocks (it raises a threshold without enough confirmed
pneumonias, `pneumo.app.clinic.site_thresholds.guard`) is saved only with an override: a reason and
the initials of whoever decides, both kept in the profile and in the audit trail with the
guard's figures. The profile also keeps the clinic's pneumonia share as the clinic lead
entered it (``prevalence``, or None when the share among the confirmed cases was used).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from pneumo.app import bounded_json
from pneumo.app.clinic.site_thresholds import GuardRailBlocked, guard
from pneumo.app.config import clean_text
from pneumo.app.history.schema import utc_now_iso
from pneumo.app.history.store import HistoryStore

PROFILE_NAME = "site_calibration.json"
MAX_OVERRIDE_REASON = 500
"""Longest override reason (characters)."""
MAX_OVERRIDE_BY = 64
"""Longest initials of an override (characters)."""
GUARD_FIELDS = ("direction", "verdict", "allowed", "current_threshold", "proposed_threshold",
                "rule", "hits", "pneumonias", "missed", "lower_bound", "needed")
"""The guard figures kept per mode in the profile and the audit trail."""

log = logging.getLogger(__name__)


class SiteProfile:
    """The saved site profile (or none), read once at start and replaced atomically."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / PROFILE_NAME
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._profile = self._load()

    def _file_stamp(self) -> tuple[int, int] | None:
        """(mtime, size) of the profile file, None when absent: a change means re-read."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> dict | None:
        """The profile on disk, or None (a damaged file is logged and ignored, never deleted)."""
        if not self.path.exists():
            return None
        try:
            profile = bounded_json.load_file(self.path)
            thresholds = profile["thresholds"]
            if not all(0.0 <= float(v) <= 1.0 for v in thresholds.values()):
                raise ValueError("a threshold outside [0, 1]")
            return profile
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("site thresholds %s cannot be read (%s): the model's thresholds are "
                        "used. Remove the file or accept a new proposal.", self.path, exc)
            return None

    @property
    def profile(self) -> dict | None:
        """The saved profile, whatever model it was made for (re-read if the file changed,
        e.g. accepted with `pneumo calibrate --accept` while the server runs)."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp, self._profile = stamp, self._load()
            return None if self._profile is None else dict(self._profile)

    def thresholds_for(self, model_sha256: str, modes: list[str]) -> dict[str, float] | None:
        """The site thresholds if a profile exists for this model and covers every mode."""
        profile = self.profile
        if profile is None or profile.get("model_sha256") != model_sha256:
            return None
        thresholds = profile["thresholds"]
        if not all(m in thresholds for m in modes):
            return None
        return {m: float(thresholds[m]) for m in modes}

    def prevalence_for(self, model_sha256: str) -> float | None:
        """The clinic's pneumonia share as entered when the profile for this model was accepted
        (None: no profile for this model, or no share entered)."""
        profile = self.profile
        if profile is None or profile.get("model_sha256") != model_sha256:
            return None
        value = profile.get("prevalence")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if 0.0 < float(value) < 1.0 else None

    def save(self, profile: dict) -> None:
        """Write the profile (temporary file, fsync, rename: never half-written)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(profile, indent=2, sort_keys=True).encode("utf-8")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        with self._lock:
            self._profile, self._stamp = dict(profile), self._file_stamp()

    def clear(self) -> dict | None:
        """Remove the profile (back to the model's thresholds); returns what was removed."""
        old = self.profile
        with self._lock:
            self.path.unlink(missing_ok=True)
            self._profile, self._stamp = None, None
        return old


def check_override(reason: object, by: object) -> dict:
    """An override {reason, by}, cleaned; raises ValueError naming the field that is wrong."""
    out = {}
    for key, value, limit in (("reason", reason, MAX_OVERRIDE_REASON),
                              ("by", by, MAX_OVERRIDE_BY)):
        if not isinstance(value, str) or not clean_text(value):
            raise ValueError(key)
        value = clean_text(value)
        if len(value) > limit:
            raise ValueError(key)
        out[key] = value
    return out


def guard_summary(proposal: dict) -> dict:
    """The guard rail's figures of a proposal, per mode (what the profile and audit keep)."""
    guard = proposal.get("guard") or {}
    return {"blocked": bool(guard.get("blocked", True)), "level": guard.get("level"),
            "modes": {m: {k: g.get(k) for k in GUARD_FIELDS}
                      for m, g in (guard.get("modes") or {}).items()}}


def blocked_modes(proposal: dict) -> dict[str, dict]:
    """The modes whose guard verdict needs an override (all, if the proposal has no guard)."""
    guard = proposal.get("guard")
    if not guard or not guard.get("modes"):
        return {m: {"verdict": "no_guard", "message": "no guard rail figures"}
                for m in proposal["thresholds"]}
    return {m: g for m, g in guard["modes"].items() if not g.get("allowed", False)}


def accept(site: SiteProfile, history: HistoryStore, proposal: dict, *, model_sha256: str,
           model_version: str, by: str | None, old: dict, override: dict | None = None) -> dict:
    """Save a proposal as this clinic's profile and audit it (``old``: source, thresholds).

    The guard rail is judged again against ``old["thresholds"]`` (those in use may have
    changed since the proposal). Raises GuardRailBlocked when it blocks and no ``override``
    ({reason, by}, see `check_override`) is given; an override is kept with the profile and in
    the audit trail, with the guard's figures.
    """
    counts = (proposal.get("guard") or {}).get("cross_fitted_counts")
    if counts and old.get("thresholds"):  # judged against the thresholds in use now
        proposal = {**proposal, "guard": {**proposal["guard"],
                                          **guard(proposal["thresholds"], old["thresholds"],
                                                  counts)}}
    blocked = blocked_modes(proposal)
    if blocked and override is None:
        raise GuardRailBlocked(blocked)
    if override is not None:
        override = {**check_override(override.get("reason"), override.get("by")),
                    "needed": bool(blocked), "blocked_modes": sorted(blocked)}
    by = by or (override["by"] if override else None)
    figures = guard_summary(proposal)
    prevalence = (proposal.get("prevalence") or {}).get("entered")
    profile = {"thresholds": proposal["thresholds"], "rule": proposal["rule"],
               "n": proposal["n"], "created_at": utc_now_iso(), "by": by,
               "model_sha256": model_sha256, "model_version": model_version,
               "proposal_id": proposal.get("id"), "cases_from": proposal.get("cases_from"),
               "prevalence": prevalence, "guard": figures, "override": override,
               "per_100": proposal.get("per_100"),
               "metrics": {k: proposal["metrics"][k] for k in
                           ("auc", "auc_ci", "proposed", "proposed_cross_fitted")}}
    site.save(profile)
    history.add_audit("calibration_accepted", old,
                      {"source": "site", "thresholds": profile["thresholds"], "n": profile["n"],
                       "proposal_id": profile["proposal_id"], "model_sha256": model_sha256,
                       "cases_from": profile["cases_from"], "prevalence": prevalence,
                       "guard": figures, "override": override}, by=by)
    return profile
