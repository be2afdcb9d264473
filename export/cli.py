"""`pneumo export` subcommand (TensorFlow is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys


def _cmd_export(args: argparse.Namespace) -> int:
    from export.pipeline import ParityError, export_model

    try:
        export_model(args.model, args.calib_data, args.out, n_calib=args.n_calib,
                     min_agreement=args.min_agreement, max_auc_drop=args.max_auc_drop)
    except ParityError as exc:
        print(f"export FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def add_subcommands(sub) -> None:
    """Register `pneumo export`."""
    p = sub.add_parser("export", help="Keras run -> fp32 + int8 ONNX with metadata and parity")
    p.add_argument("--model", required=True, help="the run's model.keras (split.json beside it)")
    p.add_argument("--calib-data", required=True, help="Kaggle folder with the training images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-calib", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--min-agreement", type=float, default=0.99)
    p.add_argument("--max-auc-drop", type=float, default=0.005)
    p.set_defaults(func=_cmd_export)
