"""This clinic's operating thresholds (a site profile), kept beside the history.

A profile is accepted from a proposal (see `edge_app.site_calibration`) and saved as
``site_calibration.json`` in the data folder: thresholds per mode, the rule that chose them,
how many confirmed cases, when, by whom, and the sha256 of the model it was made for. It is
used only with that model: after a model change the model's own thresholds apply again and
the page and ``/api/v1/calibration`` say why.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

PROFILE_NAME = "site_calibration.json"

log = logging.getLogger(__name__)


class SiteProfile:
    """The saved site profile (or none), read once at start and replaced atomically."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / PROFILE_NAME
        self._lock = threading.Lock()
        self._profile = self._load()

    def _load(self) -> dict | None:
        """The profile on disk, or None (a damaged file is logged and ignored, never deleted)."""
        if not self.path.exists():
            return None
        try:
            profile = json.loads(self.path.read_text(encoding="utf-8"))
            thresholds = profile["thresholds"]
            if not all(0.0 <= float(v) <= 1.0 for v in thresholds.values()):
                raise ValueError("a threshold outside [0, 1]")
            return profile
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("site calibration %s cannot be read (%s): the model's thresholds are "
                        "used. Remove the file or accept a new proposal.", self.path, exc)
            return None

    @property
    def profile(self) -> dict | None:
        """The saved profile, whatever model it was made for."""
        with self._lock:
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
            self._profile = dict(profile)

    def clear(self) -> dict | None:
        """Remove the profile (back to the model's thresholds); returns what was removed."""
        with self._lock:
            old, self._profile = self._profile, None
            self.path.unlink(missing_ok=True)
        return old
