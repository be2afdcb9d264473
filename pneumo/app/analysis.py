"""One image in, one stored answer out: what an upload and a received DICOM image share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pneumo.app.clinic import drift
from pneumo.app.clinic.site_profile import SiteProfile
from pneumo.app.clinic.site_thresholds import Proposals
from pneumo.app.config import DEFAULT_SETTING
from pneumo.app.history.store import HistoryStore
from pneumo.app.pipeline.checks import NotAChestXray
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.predictor import Prediction, Predictor, add_laps


@dataclass
class AppState:
    """What the request handlers share: settings, model, pipeline, history."""

    config: dict
    model: OnnxModel
    predictor: Predictor
    history: HistoryStore
    site: SiteProfile
    site_proposals: Proposals = field(default_factory=Proposals)


def site_thresholds(state: AppState) -> dict[str, float] | None:
    """This clinic's thresholds when a site profile exists for the loaded model, else None."""
    return state.site.thresholds_for(state.model.sha256, list(state.model.thresholds))


def model_thresholds(state: AppState) -> dict[str, float]:
    """The thresholds in the model file."""
    return {k: float(v) for k, v in state.model.thresholds.items()}


def drift_state(state: AppState, new: dict | None = None) -> dict:
    """The drift check of the newest images analysed with the loaded model (and `new`, an
    answer about to be stored, so that it carries what the page shows right after it)."""
    answers = [r for r in state.history.recent_scores(drift.WINDOW)
               if r["model_sha256"] == state.model.sha256]
    return drift.check(answers, state.history.recent_refusals(drift.WINDOW),
                       state.model.metadata.get("drift_reference"),
                       site_thresholds(state) or model_thresholds(state),
                       cut=model_thresholds(state).get("balanced", 0.5), newest=new)


def analyse(state: AppState, data: bytes, *, mode: str = DEFAULT_SETTING, preview: bool = False,
            patient_ref: str | None = None, file_name: str | None = None,
            source: str = "upload", study_uid: str | None = None,
            sop_uid: str | None = None, orient: str | None = None) -> tuple[Prediction, dict]:
    """Analyse image bytes and commit the record before returning (prediction, record).

    Raises what `Predictor.predict` raises (nothing is stored then) and StorageFull.
    """
    site = site_thresholds(state)
    profile = state.site.profile if site else None
    try:
        result = state.predictor.predict(
            data, mode, heatmap=True, preview=preview, site_thresholds=site,
            site_thresholds_at=(profile or {}).get("created_at"),
            clinic_share=state.site.prevalence_for(state.model.sha256), orient=orient)
    except NotAChestXray as exc:  # counted for the drift check (reason codes only)
        state.history.add_refusal([r.code for r in exc.reasons], source)
        raise
    record = result.history_record()
    record.update(patient_ref=patient_ref, file_name=file_name, source=source,
                  study_uid=study_uid, sop_uid=sop_uid)
    start = time.perf_counter()
    result.drift = record["drift"] = drift_state(state, record)["status"] == "drift"
    checked = time.perf_counter()
    # Committed before anyone is answered: an acknowledged result is never lost. The store
    # gives the record its id and time, and returns it as stored.
    stored = state.history.add(record, heatmap=result.heatmap_source,
                               image=data if state.config["keep_images"] else None)
    add_laps(result.timings_ms, drift=checked - start, save=time.perf_counter() - checked)
    return result, stored
