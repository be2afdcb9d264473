"""`pneumo bench`: registered by pneumo.cli via add_subcommands (light to import)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from pneumo import extras

SKIPPABLE = ("model_latency", "roofline", "preprocessing", "dicom_decode", "http", "request_path",
             "scaling", "executable")


def keras_packages(export_dir: str | None) -> tuple[str, ...]:
    """What `--keras` needs: Keras on TensorFlow, and the exporters unless --export-dir."""
    return ("tensorflow", "keras") if export_dir else ("tensorflow", "keras", "tf2onnx", "onnx")


def _cmd_bench(args: argparse.Namespace) -> int:
    # before anything imports TensorFlow (quiets its C++ logs; all of them go to stderr)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if args.keras:
        missing = [n for n in keras_packages(args.export_dir)
                   if importlib.util.find_spec(n) is None]
        if missing:  # the base install: say what to install, never a traceback
            print(extras.hint("bench", missing), file=sys.stderr)
            return 2
    if args.architectures:
        return _cmd_architectures(args)
    from pneumo.bench import results_report
    from pneumo.bench.suite import Options, exit_code, run

    opts = Options(
        out=Path(args.out), quick=args.quick,
        export_dir=Path(args.export_dir) if args.export_dir else None,
        keras=Path(args.keras) if args.keras else None,
        exe=Path(args.exe) if args.exe else None,
        skip=list(args.skip or []),
        compare=[Path(m) for m in args.compare or []],
    )
    opts.command = command_line(args)
    if opts.export_dir and not opts.export_dir.is_dir():
        print(f"error: --export-dir {opts.export_dir} is not a folder", file=sys.stderr)
        return 2
    missing_models = [m for m in opts.compare if not m.is_file()]
    if missing_models:
        print(f"error: --compare {missing_models[0]} not found", file=sys.stderr)
        return 2
    if opts.keras and not opts.keras.exists():
        print(f"error: --keras {opts.keras} not found", file=sys.stderr)
        return 2
    res = run(opts)
    print(results_report.summary(res), end="", flush=True)  # the one thing on stdout
    return exit_code(res)


def _cmd_architectures(args: argparse.Namespace) -> int:
    """`pneumo bench --architectures`: the cost table of the CAM-ready architectures."""
    missing = [n for n in ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib")
               if importlib.util.find_spec(n) is None]
    if missing:
        print(extras.hint("bench", missing), file=sys.stderr)
        return 2
    import logging

    from pneumo.bench import architectures

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    candidates = architectures.CANDIDATES
    if args.quick:
        candidates = (("stem4", 96), ("mobile", 96))
        settings = architectures.Settings(warmup=1, repeat=5, min_repeat=2, max_seconds=1.0)
    else:
        settings = None
    res = architectures.run(Path(args.out), candidates=candidates, settings=settings)
    print(architectures.markdown(res), end="", flush=True)
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The `pneumo bench` command these arguments stand for (for the report)."""
    parts = ["pneumo", "bench", "--out", args.out]
    if args.quick:
        parts.append("--quick")
    for flag in ("export_dir", "keras", "exe"):
        if getattr(args, flag):
            parts += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    for m in args.compare or []:
        parts += ["--compare", m]
    for s in args.skip or []:
        parts += ["--skip", s]
    return shlex.join(parts)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register `pneumo bench`."""
    p = sub.add_parser("bench", help="latency benchmarks: models, roofline, preprocessing, "
                                     "DICOM decode per transfer syntax, HTTP load, executable")
    p.add_argument("--out", default="bench-results",
                   help="output folder for results.json, results.md and plots "
                        "(default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: few repetitions, batch 1 and 8, 1 thread, 2 s HTTP levels")
    p.add_argument("--export-dir", default=None,
                   help="folder with model.fp32.onnx / model.int8.onnx from `pneumo export` "
                        "(default: export the default architecture with fresh weights; "
                        "without the training packages, time only the shipped model)")
    p.add_argument("--keras", default=None,
                   help="Keras model (.keras) for the Keras timings (needs the training "
                        "packages)")
    p.add_argument("--exe", default=None,
                   help="packaged executable for the cold-start test (default: dist/pneumo-edge)")
    p.add_argument("--architectures", action="store_true",
                   help="instead: what each CAM-ready architecture (cnn and the students) "
                        "costs next to the shipped model, in one run (MACs, parameters, int8 "
                        "size, ms on 1 and 2 threads): architectures.md/.json/.png in --out")
    p.add_argument("--compare", action="append", metavar="MODEL",
                   help="an ONNX model whose request path is profiled beside the served one "
                        "in the same run (repeatable; e.g. a student beside the pair)")
    p.add_argument("--skip", action="append", choices=SKIPPABLE, metavar="SECTION",
                   help=f"skip a section (repeatable): {', '.join(SKIPPABLE)}")
    p.set_defaults(func=_cmd_bench)
