"""`pneumo calibrate`: this clinic's thresholds from a labelled archive, without the page.

For a site that already has labelled X-rays (a folder with NORMAL/ and PNEUMONIA/, or a CSV
of file,label): every image goes through the app's own pipeline and model, the proposal is
made with the same rule and report as ``POST /api/v1/calibration/proposal``, and written as
JSON, Markdown and an ROC PNG. ``--accept`` saves it as the site profile in the data folder
(a running server picks it up on its next answer) and records it in the audit table.

The guard rail applies here as on the page: a proposal that raises a threshold without enough
confirmed pneumonias (see `pneumo.app.clinic.site_thresholds`) is accepted only with
``--override-reason TEXT --by INITIALS``, which the audit table keeps; otherwise ``--accept``
saves nothing and exits with status 3. ``--prevalence`` sets the clinic's pneumonia share for
the figures per 100 children (default: the share among the labelled cases).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pneumo.app.clinic.site_thresholds import (
    MIN_CASES_PER_CLASS,
    GuardRailBlocked,
    TooFewCases,
    check_prevalence,
    propose,
)
from pneumo.app.config import DATA_DIR_ENV, resolve
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel

EXIT_GUARD_RAIL = 3
"""Exit status of ``--accept`` when the guard rail blocks the proposal (nothing saved)."""

log = logging.getLogger(__name__)


def roc_png(proposal: dict, path: Path, size: int = 360) -> Path:
    """Draw the local ROC with the current (red) and proposed (green) operating points."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    m, w = 40, size - 60

    def xy(fpr: float, tpr: float) -> tuple[float, float]:
        return m + w * fpr, m - 20 + w * (1 - tpr)

    d.rectangle([xy(0, 1), xy(1, 0)], outline="#999999")
    d.line([xy(0, 0), xy(1, 1)], fill="#cccccc")
    roc = proposal["metrics"]["roc"]
    d.line([xy(f, t) for f, t in zip(roc["fpr"], roc["tpr"], strict=True)], fill="#1a5fb4",
           width=2)
    for key, colour in (("current", "#c01c28"), ("proposed", "#26a269")):
        for r in proposal["metrics"][key].values():
            x, y = xy(1 - r["specificity"], r["sensitivity"])
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
    d.text((m, size - 30), "1 - specificity (red: now, green: proposed)", fill="black")
    d.text((4, 4), "sensitivity", fill="black")
    img.save(path)
    return path


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.0f}%"


def markdown(proposal: dict, source: str) -> str:
    """The proposal as a short Markdown report."""
    m = proposal["metrics"]
    lines = [f"# Site threshold proposal ({proposal['created_at']})", "",
             f"Cases: {source}; {proposal['n']['normal']} NORMAL, "
             f"{proposal['n']['pneumonia']} PNEUMONIA answered by {proposal['model_version']} "
             f"(sha256 {proposal['model_sha256'][:16]}...).",
             f"AUC {m['auc']:.3f} (95% CI {m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f}). "
             f"Rule: {proposal['rule']}.", "",
             "| setting | threshold | sensitivity (95% CI) | specificity (95% CI) |",
             "|---|---|---|---|"]
    for mode in proposal["thresholds"]:
        for key in ("current", "proposed"):
            r = m[key][mode]
            lines.append(f"| {mode} {key} | {r['threshold']:.3f} | {_pct(r['sensitivity'])} "
                         f"({_pct(r['sensitivity_ci'][0])}-{_pct(r['sensitivity_ci'][1])}) | "
                         f"{_pct(r['specificity'])} ({_pct(r['specificity_ci'][0])}-"
                         f"{_pct(r['specificity_ci'][1])}) |")
    cf = m["proposed_cross_fitted"]
    lines += ["", "Cross-fitted (chosen on one half, measured on the other): "
              + "; ".join(f"{mode} sensitivity {_pct(v['sensitivity'])}, specificity "
                          f"{_pct(v['specificity'])}" for mode, v in cf.items()) + ".",
              "", m["note"], ""]
    lines += guard_markdown(proposal) + ["![ROC](roc.png)", ""]
    return "\n".join(lines)


def _range(v: float, ci: list[float]) -> str:
    return f"{v:.1f} ({ci[0]:.1f}-{ci[1]:.1f})"


def guard_markdown(proposal: dict) -> list[str]:
    """The guard rail's verdicts and the figures per 100 children, as Markdown lines."""
    g, per, prev = proposal["guard"], proposal["per_100"], proposal["prevalence"]
    lines = ["## Guard rail", "",
             "| setting | now | proposed | confirmed pneumonias (needed) | cross-fitted hits | "
             "lower bound | verdict |", "|---|---|---|---|---|---|---|"]
    for mode, v in g["modes"].items():
        now = "-" if v["current_threshold"] is None else f"{v['current_threshold']:.3f}"
        lines.append(f"| {mode} | {now} | {v['proposed_threshold']:.3f} | {v['pneumonias']} "
                     f"({v['needed']}) | {v['hits']} | {v['lower_bound']:.3f} (rule "
                     f"{v['rule']:.2f}) | {v['message']} |")
    lines += ["", ("Blocked: accept only with --override-reason TEXT --by INITIALS (recorded "
                   "in the audit table)." if g["blocked"] else "Allowed: no override needed."),
              "", g["method"], "",
              f"## Per 100 children (pneumonia share {prev['used']:.2f}, "
              + ("as entered" if prev["entered"] is not None else "the labelled cases' share")
              + ")", "", prev["note"], "",
              "| setting | expected referrals (95% CI) | expected missed pneumonias (95% CI) |",
              "|---|---|---|"]
    for mode, rows in per["modes"].items():
        for key in ("current", "proposed"):
            if key in rows:
                r = rows[key]
                lines.append(f"| {mode} {key} | {_range(r['referrals'], r['referrals_ci'])} | "
                             f"{_range(r['missed'], r['missed_ci'])} |")
    return lines + ["", per["method"], ""]


def _cmd_calibrate(args: argparse.Namespace) -> int:
    # the app's pipeline (checks, languages, DICOM) is imported only by this command
    from pneumo.app.clinic.labelled import labelled_csv, labelled_folder, score
    from pneumo.app.clinic.site_profile import SiteProfile, accept
    from pneumo.app.history.schema import DB_NAME, utc_now_iso
    from pneumo.app.history.store import HistoryStore
    from pneumo.app.pipeline.predictor import Predictor

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="[calibrate %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    override = None
    if args.override_reason is not None:
        from pneumo.app.clinic.site_profile import check_override

        try:
            override = check_override(args.override_reason, args.by)
        except ValueError:
            print("error: an override needs --override-reason TEXT (at most 500 characters) "
                  "and --by INITIALS (at most 64)", file=sys.stderr)
            return 2
    try:
        prevalence = check_prevalence(args.prevalence)
        items = labelled_csv(args.labels) if args.labels else labelled_folder(args.folder)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = f"labelled archive {args.labels or args.folder}"
    model = OnnxModel(args.model)
    data_dir = resolve({"data_dir": args.data_dir})["data_dir"]
    site = SiteProfile(data_dir)
    site_now = site.thresholds_for(model.sha256, list(model.thresholds))
    current = site_now or dict(model.thresholds)
    scored = score(Predictor(model), items)
    labels, answered = scored.answered()
    skipped = len(items) - len(answered)
    if skipped:
        log.warning("%d of %d images were refused or unreadable and are left out",
                    skipped, len(items))
    y = np.array(labels, dtype=int)
    p = np.array([r["probability"] for r in answered], dtype=np.float64)
    try:
        proposal = propose(y, p, current, minimum=args.min_cases, prevalence=prevalence)
    except TooFewCases as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    proposal.update(created_at=utc_now_iso(), model_sha256=model.sha256,
                    model_version=model.version, cases_from=source,
                    current_source="site" if site_now else "model",
                    images={"listed": len(items), "answered": len(answered),
                            "left_out": skipped})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "proposal.json").write_text(json.dumps(proposal, indent=2), encoding="utf-8")
    roc_png(proposal, out / "roc.png")
    (out / "proposal.md").write_text(markdown(proposal, source), encoding="utf-8")
    print(f"proposal written to {out / 'proposal.md'}: thresholds "
          + ", ".join(f"{k} {v:.3f}" for k, v in proposal["thresholds"].items()))
    for mode, g in proposal["guard"]["modes"].items():
        print(f"guard rail, {mode}: {g['message']}")
    if args.accept:
        history = HistoryStore(data_dir / DB_NAME)
        try:
            accept(site, history, proposal, model_sha256=model.sha256,
                   model_version=model.version, by=args.by,
                   old={"source": "site" if site_now else "model", "thresholds": current},
                   override=override)
        except GuardRailBlocked as exc:
            print(f"error: not accepted. {exc} Use --override-reason TEXT --by INITIALS to "
                  "accept it anyway (recorded in the audit table).", file=sys.stderr)
            return EXIT_GUARD_RAIL
        finally:
            history.close()
        print(f"accepted: this clinic's thresholds are saved in {site.path}"
              + (" (with an override, recorded in the audit table)" if override else ""))
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Register `pneumo calibrate`."""
    p = sub.add_parser("calibrate", help="this clinic's thresholds from labelled local X-rays")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", metavar="CSV",
                     help="CSV of file,label (normal|pneumonia), files relative to the CSV")
    src.add_argument("--folder", metavar="DIR", help="a folder with NORMAL/ and PNEUMONIA/")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="ONNX model file, the one served (default: %(default)s)")
    p.add_argument("--data-dir", default=None,
                   help=f"the server's data folder (default: ${DATA_DIR_ENV} or the user's)")
    p.add_argument("--out", default="site-calibration",
                   help="report folder: proposal.json/.md, roc.png (default: %(default)s)")
    p.add_argument("--accept", action="store_true",
                   help="save the proposal as this clinic's thresholds (audited)")
    p.add_argument("--by", default=None, help="who accepts it (initials, for the audit)")
    p.add_argument("--override-reason", metavar="TEXT", default=None,
                   help="accept a proposal the guard rail blocks (it raises a threshold without "
                        "enough confirmed pneumonias): why; needs --by; kept in the audit table")
    p.add_argument("--prevalence", type=float, default=None, metavar="SHARE",
                   help="the clinic's pneumonia share (0-1) for the figures per 100 children "
                        "(default: the share among the labelled cases)")
    p.add_argument("--min-cases", type=int, default=MIN_CASES_PER_CLASS,
                   help="fewest cases per class (default: %(default)s)")
    p.set_defaults(func=_cmd_calibrate)
