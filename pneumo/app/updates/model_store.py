"""Installed models in the data folder: install (signed, checked, self-tested), rollback, source.

Layout: ``<data_dir>/models/`` holds each installed model file (``<sha16>-<name>.onnx`` with
its ``.sig``) and ``installed.json``, a stack of installs: the top one is the active model,
rollback pops it; an empty stack means the model bundled with the app. Every install and
rollback is also an append-only row of the history database's ``audit`` table (who, when,
sha256 of the old and new model).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pneumo.app import PACKAGE_DIR, bounded_json
from pneumo.app.pipeline.decoded import N_  # the gettext marker without Flask (pneumo.app.i18n.N_)
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OUTPUTS, file_sha256

log = logging.getLogger(__name__)

MODELS_DIR = "models"
STATE_NAME = "installed.json"
SOURCE_WORDS = {"bundled": N_("bundled with the app"), "installed": N_("installed on %(day)s"),
                "file": N_("file given at start-up (%(name)s)")}
"""Where the served model came from, in words (English message ids; ``source_text``)."""
REFERENCE_DIR = PACKAGE_DIR / "reference_xrays"
"""The six real X-rays shipped with the app (package data; credit in its README.md)."""
REFERENCE_XRAYS = (("NORMAL", "IM-0115-0001.jpeg"), ("PNEUMONIA", "person1_bacteria_1.jpeg"))
"""The real X-rays (label, file) every model must label right: the executable's self-test set."""


class ModelStoreError(Exception):
    """An install or rollback that was refused, or an installed model that cannot be used."""


@dataclass
class InstallResult:
    """What an install did: the new entry, the model it replaced, and the check's lines."""

    entry: dict
    previous: dict
    lines: list[str] = field(default_factory=list)


def reference_xrays() -> list[tuple[Path, str]]:
    """(file, expected label) of the reference X-rays (bundled in the executable)."""
    if getattr(sys, "frozen", False):
        base = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "selftest"
        return [(base / name, label) for label, name in REFERENCE_XRAYS]
    return [(REFERENCE_DIR / label / name, label) for label, name in REFERENCE_XRAYS]


def models_dir(data_dir: str | Path) -> Path:
    """The folder holding installed models."""
    return Path(data_dir) / MODELS_DIR


def _read_state(data_dir: str | Path) -> list[dict]:
    path = models_dir(data_dir) / STATE_NAME
    if not path.is_file():
        return []
    try:
        stack = bounded_json.load_file(path)["installed"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelStoreError(f"{path} is damaged ({exc}); move it aside to return to the "
                              "bundled model") from exc
    return list(stack)


def _write_state(data_dir: str | Path, stack: list[dict]) -> None:
    path = models_dir(data_dir) / STATE_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"installed": stack}, indent=1) + "\n")
    os.replace(tmp, path)  # atomic: a running app or a crash sees the old or the new list


def bundled_entry() -> dict:
    """The model bundled with the app, described like an installed one."""
    return {"file": str(DEFAULT_MODEL), "sha256": file_sha256(DEFAULT_MODEL),
            "source": "bundled"}


def active_entry(data_dir: str | Path) -> dict | None:
    """The installed model in use (top of the stack), or None for the bundled model."""
    stack = _read_state(data_dir)
    return stack[-1] if stack else None


def active_model(data_dir: str | Path) -> Path | None:
    """The installed model file to serve, checked against its recorded sha256; None = bundled."""
    entry = active_entry(data_dir)
    if entry is None:
        return None
    path = models_dir(data_dir) / entry["file"]
    if not path.is_file():
        raise ModelStoreError(f"the installed model {path} is missing; run `pneumo model "
                              "rollback` or install it again")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise ModelStoreError(f"the installed model {path} was changed after it was installed "
                              f"(sha256 {digest}, installed {entry['sha256']}); run `pneumo "
                              "model rollback` or install it again")
    return path


def serving_model(model_arg: str | None, data_dir_arg: str | None) -> Path:
    """The model to serve: --model if given, else the data folder's installed one, else bundled."""
    if model_arg:
        return Path(model_arg).expanduser().resolve()
    from pneumo.app.config import resolve

    return active_model(resolve({"data_dir": data_dir_arg})["data_dir"]) or Path(DEFAULT_MODEL)


def describe(model_path: str | Path, data_dir: str | Path | None) -> dict:
    """Where the served model came from: bundled, installed on DATE, or a file given by hand."""
    path = Path(model_path).resolve()
    if path == Path(DEFAULT_MODEL).resolve():
        return {"source": "bundled", "text": SOURCE_WORDS["bundled"]}
    if data_dir is not None:
        try:
            entry = active_entry(data_dir)
        except ModelStoreError:
            entry = None
        if entry and path == (models_dir(data_dir) / entry["file"]).resolve():
            day = entry["installed_at"][:10]
            return {"source": "installed", "installed_at": entry["installed_at"],
                    "signed_by": entry.get("signed_by"),
                    "text": SOURCE_WORDS["installed"] % {"day": day}}
    return {"source": "file", "name": path.name,
            "text": SOURCE_WORDS["file"] % {"name": path.name}}


def source_text(source: dict | None) -> str:
    """``describe``'s text in the current language (a request's, or the console's)."""
    from pneumo.app.i18n import _

    source = source or {}
    kind = source.get("source")
    if kind == "installed" and source.get("installed_at"):
        return _(SOURCE_WORDS["installed"], day=str(source["installed_at"])[:10])
    if kind == "file" and source.get("name"):
        return _(SOURCE_WORDS["file"], name=source["name"])
    if kind == "bundled" or not source.get("text"):
        return _(SOURCE_WORDS["bundled"])
    return str(source["text"])


def compatibility_problems(candidate, reference) -> list[str]:
    """Why a model (OnnxModel) cannot replace the reference one in this app; [] if it can."""
    problems = []
    if list(candidate.class_names) != list(reference.class_names):
        problems.append(f"classes {candidate.class_names}, this app needs "
                        f"{reference.class_names}")
    missing = sorted(set(reference.thresholds) - set(candidate.thresholds))
    if missing:
        problems.append(f"no threshold for the operating mode(s) {', '.join(missing)}")
    outputs = {o.name for o in candidate.session.get_outputs()}
    if not set(OUTPUTS) <= outputs:
        problems.append(f"outputs {sorted(outputs)}, this app needs {list(OUTPUTS)}")
    if candidate.input_size < 32:
        problems.append(f"input size {candidate.input_size} px is too small")
    return problems


def reference_check(model) -> tuple[list[str], list[str]]:
    """Label the reference X-rays with a model (OnnxModel); (report lines, problems)."""
    from pneumo.app.pipeline.predictor import Predictor

    predictor = Predictor(model)
    lines, problems = [], []
    for path, expected in reference_xrays():
        pred = predictor.predict(path.read_bytes(), heatmap=True)
        lines.append(f"reference {path.name} (a {expected} X-ray) -> {pred.label}, "
                     f"probability {pred.probability:.3f} (threshold {pred.threshold:.3f})")
        if pred.label != expected:
            problems.append(f"the model calls the {expected} reference X-ray {path.name} "
                            f"{pred.label}")
        if not pred.heatmap_png:
            problems.append(f"no heatmap was made for {path.name}")
    return lines, problems


def _audit(data_dir: Path, action: str, old: dict, new: dict, by: str) -> None:
    from pneumo.app.history.schema import DB_NAME
    from pneumo.app.history.store import HistoryStore

    store = HistoryStore(data_dir / DB_NAME)
    try:
        store.add_audit(action, old, new, by=by)
    finally:
        store.close()


def _summary(entry: dict) -> dict:
    keep = ("sha256", "name", "version", "source", "signed_by", "unsigned", "installed_at",
            "file")
    return {k: entry[k] for k in keep if k in entry}


def install_model(model: str | Path, data_dir: str | Path, *,
                  trusted_key: str | Path | None = None, allow_unsigned: bool = False,
                  by: str | None = None) -> InstallResult:
    """Verify, check and self-test a model file, then make it the data folder's active model."""
    from pneumo.app.pipeline.onnx_model import OnnxModel
    from pneumo.app.updates.signing import RELEASE_PUBLIC_KEY, SignatureError, verify_model

    model, data_dir = Path(model).resolve(), Path(data_dir).expanduser().resolve()
    by = by or getpass.getuser()
    lines = []
    try:  # read once: the bytes checked are the bytes loaded, self-tested and installed
        data = model.read_bytes()
    except OSError as exc:
        raise ModelStoreError(f"refused: {model} cannot be read: {exc}") from exc
    t0 = time.perf_counter()
    try:
        verified = verify_model(model, trusted_key or RELEASE_PUBLIC_KEY, data=data)
        signed_by = verified.key_id
        lines.append(f"signature: ok (key {signed_by}, checked in "
                     f"{(time.perf_counter() - t0) * 1000:.0f} ms)")
    except SignatureError as exc:
        if not allow_unsigned:
            raise ModelStoreError(f"refused: {exc}") from exc
        log.warning("installing %s WITHOUT a valid signature (--allow-unsigned, by %s): %s",
                    model, by, exc)
        signed_by = None
        lines.append(f"signature: NOT checked (--allow-unsigned): {exc}")
    try:
        candidate = OnnxModel(model, data=data)
    except Exception as exc:  # noqa: BLE001 - any load failure refuses the install
        raise ModelStoreError(f"refused: {model.name} cannot be loaded as a pneumo model: "
                              f"{exc}") from exc
    problems = compatibility_problems(candidate, OnnxModel(DEFAULT_MODEL))
    if problems:
        raise ModelStoreError(f"refused: {model.name} is not compatible with this app: "
                              + "; ".join(problems))
    lines.append(f"metadata: {candidate.name} {candidate.version}, classes "
                 f"{', '.join(candidate.class_names)}, input {candidate.input_size} px: "
                 "compatible")
    checked, problems = reference_check(candidate)
    lines += checked
    if problems:
        raise ModelStoreError("refused: the self-test failed: " + "; ".join(problems))
    previous = active_entry(data_dir) or bundled_entry()
    folder = models_dir(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{candidate.sha256[:16]}-{model.name}"
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    from pneumo.app.updates.signing import signature_path

    if signature_path(model).is_file():
        shutil.copyfile(signature_path(model), signature_path(folder / name))
    if file_sha256(folder / name) != candidate.sha256:
        raise ModelStoreError(f"the copy {folder / name} differs from {model}; not installed")
    entry = {"file": name, "sha256": candidate.sha256, "name": candidate.name,
             "version": candidate.version, "source": "installed", "from": str(model),
             "signed_by": signed_by, "installed_at": _now(), "by": by}
    if signed_by is None:
        entry["unsigned"] = True  # --allow-unsigned: kept in the audit row too
    _audit(data_dir, "model_install", _summary(previous), _summary(entry), by)
    _write_state(data_dir, [*_read_state(data_dir), entry])
    log.info("model %s %s (sha256 %s) installed in %s by %s", candidate.name,
             candidate.version, candidate.sha256, folder, by)
    return InstallResult(entry=entry, previous=previous, lines=lines)


def rollback(data_dir: str | Path, *, by: str | None = None) -> tuple[dict, dict]:
    """Return to the model used before the last install; (left entry, now active entry)."""
    data_dir = Path(data_dir).expanduser().resolve()
    by = by or getpass.getuser()
    stack = _read_state(data_dir)
    if not stack:
        raise ModelStoreError("nothing to roll back: the bundled model is in use")
    left = stack.pop()
    now = stack[-1] if stack else bundled_entry()
    _audit(data_dir, "model_rollback", _summary(left), _summary(now), by)
    _write_state(data_dir, stack)
    log.info("model rolled back from %s to %s by %s", left["sha256"], now["sha256"], by)
    return left, now


def _now() -> str:
    from pneumo.app.history.schema import utc_now_iso

    return utc_now_iso()
