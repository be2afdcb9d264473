"""Image files and folders through the pipeline, one result or failure per file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pneumo.app.pipeline.checks import NotAChestXray
from pneumo.app.pipeline.decoded import IMAGE_SUFFIXES, ImageError
from pneumo.app.pipeline.predictor import Predictor


def iter_inputs(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, plus image files found recursively in folders (sorted)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if (f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
                        and (f.suffix.lower() in IMAGE_SUFFIXES or f.suffix == "")):
                    yield f
        else:
            yield p  # missing files are reported as failures


def predict_file(predictor: Predictor, path: Path, mode: str) -> dict:
    """One file -> a JSON-ready result or failure dict (never raises for bad input)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"file": str(path), "status": "error",
                "error": {"code": "unreadable_file", "message": exc.strerror or str(exc)}}
    try:
        result = predictor.predict(data, mode, heatmap=False)
    except ImageError as exc:
        err = {"code": exc.code, "message": exc.message}
        if isinstance(exc, NotAChestXray):
            err["reasons"] = [r.to_json() for r in exc.reasons]
        return {"file": str(path), "status": "error", "error": err}
    except Exception as exc:  # a bug must not stop the rest of the batch
        return {"file": str(path), "status": "error",
                "error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}}
    return {"file": str(path), "status": "ok", **result.to_json()}


