"""The figures people quote about the bundled model, generated from its metadata.

    python -m pneumo.app.model_facts                      print the Markdown block
    python -m pneumo.app.model_facts --write README.md    replace the block between the markers
    python -m pneumo.app.model_facts --check README.md    exit 1 (naming the file) when stale

Every figure (name, version, thresholds, the external validation's cross-fitted metrics, the
review band, calibration, the internal validation's n) is read from the model file's
metadata (`pneumo.app.pipeline.onnx_model.read_metadata`), size and sha256 from the file itself: nothing
is typed by hand, so a README that embeds the block between ``BEGIN`` and ``END`` cannot
silently disagree with the shipped model (tests/app/test_model_facts.py checks it).
Links in the block are relative to the project root, where README.md is.

Runtime-light: the standard library and ONNX Runtime (through `pneumo.app.pipeline.onnx_model`), no Flask.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, file_sha256, read_metadata

BEGIN = "<!-- model-facts:begin -->"
END = "<!-- model-facts:end -->"
COMMAND = "python -m pneumo.app.model_facts --write README.md"
SHA_PREFIX = 12
ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages): links start here
CARD_NAME = "MODEL_CARD.md"


def format_probability(p: float) -> str:
    """A threshold as the block writes it: probability with 3 decimals and percent."""
    return f"{float(p):.3f} ({100 * float(p):.1f} %)"


def format_metric(x: float) -> str:
    """A metric (AUC, accuracy, sensitivity, specificity, ECE) with 3 decimals."""
    return f"{float(x):.3f}"


def format_share(x: float) -> str:
    """A share of images as a percentage with one decimal."""
    return f"{100 * float(x):.1f} %"


def _link_path(path: Path) -> str:
    """`path` relative to the project root (where README.md lives) if inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def _external_lines(ext: dict) -> list[str]:
    """The external validation's cross-fitted figures (mean of the two halves)."""
    mean = ext.get("mean") or {}
    bal, scr = mean.get("balanced") or {}, mean.get("screening") or {}
    name = ext.get("set", "external validation")
    if "external validation" not in name:
        name = f"external validation ({name})"
    counts = f"n = {ext['n']}" if "n" in ext else "n unknown"
    if "n_normal" in ext and "n_pneumonia" in ext:
        counts += f": {ext['n_normal']} NORMAL, {ext['n_pneumonia']} PNEUMONIA"
    lines = [f"**{name[0].upper()}{name[1:]}**, {counts}; **cross-fitted** (calibration and "
             "thresholds chosen on one patient-grouped half, measured on the other, swapped, "
             "mean of the two halves):", ""]
    if "auc" in mean:
        lines.append(f"- AUC {format_metric(mean['auc'])}")
    if bal:
        lines.append(f"- `balanced`: accuracy {format_metric(bal['accuracy'])}, sensitivity "
                     f"{format_metric(bal['sensitivity'])}, specificity "
                     f"{format_metric(bal['specificity'])}")
    if scr:
        lines.append(f"- `screening`: sensitivity {format_metric(scr['sensitivity'])}, "
                     f"specificity {format_metric(scr['specificity'])}")
    if "borderline_share" in mean:
        band = ("- review band (screening <= p < balanced: \"Unclear: a clinician should "
                f"review this X-ray\"): {format_share(mean['borderline_share'])} of images")
        if "accuracy_outside_borderline" in mean:
            band += (f"; accuracy outside the band "
                     f"{format_metric(mean['accuracy_outside_borderline'])}")
        lines.append(band)
    if "ece_before" in mean and "ece_after" in mean:
        fit = ext.get("calibration_fit")
        lines.append(f"- ECE {format_metric(mean['ece_before'])} before -> "
                     f"{format_metric(mean['ece_after'])} after calibration"
                     + (f" ({fit})" if fit else ""))
    insample = ext.get("shipped_thresholds_in_sample") or {}
    ins_bal = insample.get("balanced") or {}
    if {"fp", "fn", "tn", "tp"} <= set(ins_bal):
        normals, pneumonias = ins_bal["tn"] + ins_bal["fp"], ins_bal["tp"] + ins_bal["fn"]
        lines.append(f"- with the shipped thresholds (chosen on these same images, so "
                     f"optimistic): `balanced` calls {ins_bal['fp']} of {normals} normals "
                     f"PNEUMONIA and misses {ins_bal['fn']} of {pneumonias} pneumonias")
    return lines


def model_facts(model_path: str | Path = DEFAULT_MODEL) -> str:
    """The Markdown block (without markers) of the quoted figures of one model file."""
    model_path = Path(model_path)
    meta, _card = read_metadata(model_path)
    thresholds = {k: float(v) for k, v in meta["thresholds"].items()}
    size_mb = model_path.stat().st_size / 1e6
    precision = f" ({meta['precision']})" if meta.get("precision") else ""
    s = int(meta["input_size"])
    head = (f"**The bundled model**: `{meta.get('name', model_path.stem)}` version "
            f"`{meta.get('version', 'unknown')}`{precision}, "
            f"[`{_link_path(model_path)}`]({_link_path(model_path)}), "
            f"{size_mb:.2f} MB, sha256 `{file_sha256(model_path)[:SHA_PREFIX]}...`; "
            f"input {s} x {s} grayscale")
    card = model_path.parent / CARD_NAME
    if card.exists():
        head += f"; model card [{CARD_NAME}]({_link_path(card)})"
    lines = [f"<!-- generated from the model's metadata by `{COMMAND}`: do not edit by hand -->",
             head + ".", ""]
    rules = meta.get("threshold_rules") or {}
    source = meta.get("operating_points_source")
    cal = meta.get("calibration") or {}
    scale = "calibrated probability" if cal.get("method") else "probability"
    lines += [f"| operating point | threshold ({scale}) | rule |", "|---|---|---|"]
    for mode in ("balanced", "screening"):
        if mode in thresholds:
            lines.append(f"| `{mode}` | {format_probability(thresholds[mode])} "
                         f"| {rules.get(mode, '')} |")
    if source:
        lines += ["", f"Both thresholds were chosen on the {source}."]
    if cal.get("method"):
        params = ", ".join(f"{k} = {float(cal[k]):.3f}" for k in ("a", "b", "temperature")
                           if k in cal)
        lines += ["", f"Calibration: {cal['method']}" + (f" ({params})" if params else "")
                  + (f", fitted on the {cal['fitted_on']}" if cal.get("fitted_on") else "")
                  + "."]
    ext = meta.get("external_metrics")
    lines.append("")
    if ext:
        lines += _external_lines(ext)
    else:
        lines.append("This model's metadata carries no external validation figures.")
    internal = []
    if "val_n" in meta:
        internal.append(f"n = {meta['val_n']}")
    val = meta.get("val_metrics") or {}
    if "auc" in (val.get("balanced") or {}):
        internal.append(f"AUC {format_metric(val['balanced']['auc'])}")
    sens = [f"{mode} {format_metric(val[mode]['sensitivity'])}" for mode in
            ("balanced", "screening") if "sensitivity" in (val.get(mode) or {})]
    if sens:
        internal.append("sensitivity at the shipped thresholds " + ", ".join(sens))
    if internal:
        fraction = (meta.get("recipe") or {}).get("val_fraction")
        split = f"a patient-grouped {100 * float(fraction):.0f} %" if fraction else "a split"
        lines += ["", f"Internal validation ({split} of the training hospital's images, never "
                  "trained on; near-separable): " + "; ".join(internal) + "."]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with the part between BEGIN and END replaced by `block` (ValueError if absent)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"needs exactly one '{BEGIN}' followed by one '{END}'")
    return text[:start + len(BEGIN)] + "\n" + block + "\n" + text[end:]


def current_block(text: str) -> str:
    """The text between BEGIN and END, without the newlines next to the markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"needs '{BEGIN}' followed by '{END}'")
    return text[start + len(BEGIN):end].strip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the block, or --write / --check it in Markdown files; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m pneumo.app.model_facts",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="the model file (default: the bundled one)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", nargs="+", type=Path, metavar="FILE",
                      help=f"replace the text between {BEGIN} and {END}")
    mode.add_argument("--check", nargs="+", type=Path, metavar="FILE",
                      help="exit 1, naming the file, when its block is not the generated one")
    args = parser.parse_args(argv)
    if not args.write and not args.check:
        print(model_facts(args.model))
        return 0
    status, block = 0, model_facts(args.model)
    for path in args.write or args.check:
        try:
            text = path.read_text(encoding="utf-8")
            fresh = replace_block(text, block)
        except (OSError, ValueError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = max(status, 1 if args.check else 2)
            continue
        if fresh == text:
            continue
        if args.check:
            print(f"{path}: the model-facts block disagrees with {args.model.name}'s metadata; "
                  f"run: python -m pneumo.app.model_facts --write {path}", file=sys.stderr)
            status = max(status, 1)
        else:
            path.write_text(fresh, encoding="utf-8")
            print(f"{path}: model-facts block updated")
    return status


if __name__ == "__main__":
    sys.exit(main())
