"""`pneumo export` subcommand (TensorFlow is imported only when it runs)."""

from __future__ import annotations

import argparse
import logging

from pneumo import extras

log = logging.getLogger(__name__)


def _cmd_export(args: argparse.Namespace) -> int:
    from pneumo.export.run import ParityError, export_model
    models = args.model[0] if len(args.model) == 1 else args.model
    try:
        export_model(models, args.calib_data, args.out, n_calib=args.n_calib,
                     min_agreement=args.min_agreement, max_auc_drop=args.max_auc_drop,
                     external_val=args.external_val, calibration=args.calibration,
                     cross_fit_seed=args.cross_fit_seed)
    except ParityError as exc:
        log.error("export FAILED: %s", exc)
        return 1
    return 0


def _cmd_drift_reference(args: argparse.Namespace) -> int:
    from pneumo.export.drift_reference import add_drift_reference

    ref = add_drift_reference(args.model, args.images, args.source)
    print(f"{args.model}: drift reference from {ref['n']} images ({ref['n_refused']} refused, "
          f"borderline {ref['borderline_rate']:.3f}); the file's sha256 changed, so site "
          "thresholds made for the old file no longer apply")
    return 0


def _cmd_orientation_check(args: argparse.Namespace) -> int:
    from pneumo.export.orientation import add_orientation_check

    figures = add_orientation_check(args.model, args.images, args.external_val, args.report,
                                    beside=args.beside)
    for name in ("held_out_training_patients", "external_validation"):
        for head, f in figures.get(name, {}).items():
            if "detected" not in f:
                continue
            print(f"{name}: {head}: upright flagged {f['false_alarms_upright']:.4%}, detected "
                  + ", ".join(f"{k} {v:.2%}" for k, v in f["detected"].items()))
    if args.beside:
        print(f"{args.model}: orientation check stored beside it (the file is unchanged)")
    else:
        print(f"{args.model}: orientation check stored; the file's sha256 changed, so site "
              "thresholds made for the old file no longer apply")
    return 0


def add_subcommands(sub) -> None:
    """Register `pneumo export`, `pneumo drift-reference` and `pneumo orientation-check`."""
    o = sub.add_parser("orientation-check",
                       help="fit the upside-down / mirrored check and store it in an ONNX model")
    o.add_argument("model", help="the .onnx file to update in place")
    o.add_argument("--images", required=True, metavar="DIR",
                   help="the training images (NORMAL/, PNEUMONIA/), e.g. "
                        "../shared/data/chest_xray/train")
    o.add_argument("--external-val", metavar="DIR", default=None,
                   help="also report the figures on this labelled folder (scored, never "
                        "fitted on), e.g. ../shared/data/external_val")
    o.add_argument("--report", metavar="DIR", default=None,
                   help="write orientation.md/.json/.png there (e.g. reports/orientation)")
    o.add_argument("--beside", action="store_true",
                   help="leave the model file as signed and write MODEL.orientation.json beside "
                        "it (read by the app only for its bundled model)")
    o.set_defaults(func=_cmd_orientation_check)
    extras.needs_train_extra(o, ("onnx", "sklearn", "matplotlib"))

    d = sub.add_parser("drift-reference",
                       help="store the app's drift reference in an exported ONNX model")
    d.add_argument("model", help="the .onnx file to update in place")
    d.add_argument("--images", required=True, metavar="DIR",
                   help="labelled folder (NORMAL/, PNEUMONIA/) the operating points were chosen "
                        "on, e.g. ../shared/data/external_val")
    d.add_argument("--source", default="external validation (half of the official test split)",
                   help="how reports name those images (default: %(default)s)")
    d.set_defaults(func=_cmd_drift_reference)
    extras.needs_train_extra(d, ("onnx",))

    p = sub.add_parser("export", help="Keras run(s) -> fp32 + int8 ONNX with metadata and parity")
    p.add_argument("--model", required=True, action="append", metavar="RUN",
                   help="a run's model.keras or run folder (split.json beside it); repeat it "
                        "to export one ensemble graph (mean of the members' logits)")
    p.add_argument("--calib-data", required=True, help="Kaggle folder with the training images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-calib", type=int, default=300,
                   help="training images (at most, stratified by class, no validation "
                        "patient) for the int8 calibration (default: %(default)s)")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="parity gate: smallest share of internal validation images on which "
                        "int8 and fp32 give the same label; below it the export fails (exit 1) "
                        "(default: %(default)s)")
    p.add_argument("--max-auc-drop", type=float, default=0.005,
                   help="parity gate: largest internal validation AUC drop from fp32 to int8; "
                        "above it the export fails (exit 1) (default: %(default)s)")
    p.add_argument("--external-val", metavar="DIR",
                   help="labelled folder (NORMAL/, PNEUMONIA/), e.g. ../shared/data/external_val: "
                        "fit the probability calibration and choose the operating points there "
                        "(sensitivity >= 0.95 / 0.98), reported cross-fitted; without it the "
                        "thresholds come from the internal validation split")
    p.add_argument("--calibration", choices=["auto", "platt", "temperature"], default="auto",
                   help="with --external-val: the calibration fit (auto: lower cross-fitted "
                        "ECE) (default: %(default)s)")
    p.add_argument("--cross-fit-seed", type=int, default=0,
                   help="seed of the patient-grouped halves used for cross-fitting "
                        "(default: %(default)s)")
    p.set_defaults(func=_cmd_export)
    extras.needs_train_extra(p, extras.EXPORT)
