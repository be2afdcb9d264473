"""The `pneumo` command line: one entry point, one subcommand per job.

Heavy imports (TensorFlow, tf2onnx, matplotlib) happen inside the subcommands that need
them, so `pneumo serve` and `pneumo predict` start fast with ONNX Runtime alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pneumo import extras
from pneumo.app.runtime.logs import setup_logging
from pneumo.train import config as train_config


def _cmd_train(args: argparse.Namespace) -> int:
    if args.backend != "tensorflow":  # read by Keras when it is first imported
        os.environ["KERAS_BACKEND"] = args.backend
    from pneumo.train.trainer import train

    train(train_config.from_args(args), resume=not args.no_resume)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pneumo.train.evaluate_cli import evaluate_cli

    if args.cam_teacher:
        return _cmd_cam_agreement(args)
    return evaluate_cli(args.model, args.data, json_path=args.json, report_dir=args.report,
                        split=args.split, shifts=args.shifts, external_val=args.external_val)


def _cmd_cam_agreement(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pneumo.train.cam_agreement import cam_agreement

    result = cam_agreement(args.model, args.cam_teacher, args.data)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(f"CAM agreement with {args.cam_teacher} on {result['correlation']['n']} images: "
          f"correlation mean {result['correlation']['mean']:.3f} (median "
          f"{result['correlation']['median']:.3f}), top-10 % IoU mean "
          f"{result['top10_iou']['mean']:.3f} (median {result['top10_iou']['median']:.3f})")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the CNN on a Kaggle-layout folder")
    train_config.add_arguments(p)  # one option per TrainConfig field: its default and help
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a run")
    p.set_defaults(func=_cmd_train)
    extras.needs_train_extra(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics with 95%% CIs for a .keras or .onnx model")
    p.add_argument("--model", required=True, help="model.keras (with model.json) or .onnx")
    p.add_argument("--data", required=True,
                   help="folder with NORMAL/ and PNEUMONIA/, or a Kaggle root")
    p.add_argument("--split", default="auto",
                   help="for a Kaggle root: test, val, train, or 'auto' (test if present, "
                        "else the model's own validation split) (default: %(default)s)")
    p.add_argument("--json", help="write the metrics as JSON here")
    p.add_argument("--report", help="write a Markdown report with PNG plots into this folder")
    p.add_argument("--shifts", action="store_true",
                   help="also report metrics under acquisition shifts (contrast, gamma, noise...)")
    p.add_argument("--external-val", metavar="DIR",
                   help="also judge the model on this labelled folder (NORMAL/, PNEUMONIA/), "
                        "reported beside --data as external validation")
    p.add_argument("--cam-teacher", metavar="MODEL.onnx",
                   help="instead of metrics: how closely the --model (an .onnx student) heatmap "
                        "follows this model's on the --data folder (CAM correlation and top-10 %% "
                        "overlap; pneumo/train/cam_agreement.py)")
    p.set_defaults(func=_cmd_evaluate)
    extras.needs_train_extra(p)


def _cmd_recipes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pneumo.train.recipe_report import write_recipe_report

    def pairs(items: list[str] | None, what: str) -> dict[str, str]:
        out = {}
        for item in items or []:
            name, sep, value = item.partition("=")
            if not sep or not name or not value:
                raise SystemExit(f"{what} must be NAME=VALUE, got {item!r}")
            out[name] = value
        return out

    ensembles = {k: v.split(",") for k, v in pairs(args.ensemble, "--ensemble").items()}
    exported = {k: Path(v) for k, v in pairs(args.exported, "--exported").items()}
    path = write_recipe_report(Path(args.runs), Path(args.out), ensembles=ensembles,
                               exported=exported,
                               commands=Path(args.commands) if args.commands else None,
                               only=args.only)
    print(path.read_text())
    return 0


def _add_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="the recipe search table, judged on external validation")
    p.add_argument("--runs", required=True,
                   help="folder of training runs made with --external-val")
    p.add_argument("--out", required=True, help="report folder (README.md, recipes.json/png)")
    p.add_argument("--ensemble", action="append", metavar="NAME=RUN,RUN,...",
                   help="also score an ensemble of these runs (mean logit); repeatable")
    p.add_argument("--exported", action="append", metavar="NAME=MODEL.onnx",
                   help="int8 size and one-core latency of a row's exported model; repeatable")
    p.add_argument("--only", nargs="*", help="score only these run names (plus ensembles)")
    p.add_argument("--commands", help="a script whose text is quoted as the commands")
    p.set_defaults(func=_cmd_recipes)
    extras.needs_train_extra(p)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand (each stage's cli module is light to import)."""
    from pneumo.app.clinic.cli import add_subcommand as add_calibrate
    from pneumo.app.runtime.cli import add_subcommands as add_app
    from pneumo.app.updates.cli import add_subcommands as add_model
    from pneumo.bench.cli import add_subcommands as add_bench
    from pneumo.export.cli import add_subcommands as add_export
    from pneumo.scale.cli import extend_predict as add_scale
    from pneumo.train.ablation_cli import add_subcommand as add_ablation
    from pneumo.train.gan_cli import add_subcommands as add_gan

    parser = argparse.ArgumentParser(
        prog="pneumo", description="Pediatric chest X-ray pneumonia screening toolkit."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_recipes, add_gan, add_ablation, add_export,
                add_app, add_scale, add_model, add_calibrate, add_bench):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pneumo` console script."""
    # Quiet TensorFlow's C++ info logs (not oneDNN itself: disabling it halves training speed).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from pneumo import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = " ".join([args.command] + [v for k, v in vars(args).items()
                                      if k.endswith("_command") and v])
    missing = extras.missing_packages(args)
    if missing:  # the base install: say what to install, never a traceback
        print(extras.hint(name, missing), file=sys.stderr)
        return 2
    setup_logging()  # the one logging setup: progress and server logs to stderr
    try:
        return int(args.func(args) or 0)
    except FileNotFoundError as exc:  # a wrong path is the user's to fix: no traceback
        print(f"pneumo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if not extras.is_training_package(exc.name):
            raise
        print(extras.hint(name, [exc.name.split(".")[0]]), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
