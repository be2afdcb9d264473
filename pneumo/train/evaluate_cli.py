"""`pneumo evaluate`: judge a model, print the table, write the JSON and the report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pneumo.train.data import EXTERNAL_LABEL, list_class_folder
from pneumo.train.evaluate import evaluate, format_table, load_predictor, resolve_eval_samples
from pneumo.train.report import write_report

log = logging.getLogger(__name__)


def evaluate_cli(model: str, data: str, *, json_path: str | None = None,
                 report_dir: str | None = None, split: str = "auto", shifts: bool = False,
                 external_val: str | None = None) -> int:
    """Run `pneumo evaluate`; print the table, optionally write JSON and a report.

    With `external_val` (a labelled folder), the same model is also judged there and both
    sets are reported side by side, the external one named as such.
    """
    predict, meta = load_predictor(model)
    samples, source = resolve_eval_samples(model, data, split)
    if not samples:
        log.error("no images found in %s", source)
        return 2
    log.info("evaluating %s on %d images from %s", model, len(samples), source)
    result = evaluate(predict, meta, samples, shifts=shifts)
    result.data = source
    result.label = ("internal validation" if source.startswith("validation split")
                    else EXTERNAL_LABEL if Path(source).name == "external_val"
                    else f"evaluation data ({source})")
    if external_val:
        ext_samples = list_class_folder(Path(external_val))
        if not ext_samples:
            log.error("no images found in %s/NORMAL or /PNEUMONIA", external_val)
            return 2
        log.info("and on %d images of %s from %s", len(ext_samples), EXTERNAL_LABEL,
                 external_val)
        ext = evaluate(predict, meta, ext_samples, shifts=False)
        ext.data, ext.label = str(external_val), EXTERNAL_LABEL
        result.external = ext
    print(format_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result.to_json(), indent=2))
    if report_dir:
        history = Path(model).resolve().parent / "history.csv"
        write_report(result, Path(report_dir), model_path=model,
                     history_csv=history if history.exists() else None)
        log.info("report written to %s/report.md", report_dir)
    return 0
