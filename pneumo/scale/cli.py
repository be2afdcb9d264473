"""The options `pneumo predict` gains for archives (registered by pneumo.cli, not by the app:
the clinic executable's `predict` stays as it is). Standard library only.

Without any of them `pneumo predict` is the clinic's batch mode, unchanged (JSON lines, the
clinic CSV). With ``--engine``, ``--address``, ``--manifest``, ``--out`` or another archive
option it scores an archive (pneumo.scale.job): rows in Parquet shards, a CSV, a summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import sys
from pathlib import Path

SCALE_HINT = "pip install '.[scale]'"
ARCHIVE_OPTIONS = ("engine", "address", "manifest", "out", "verify", "pseudonymise", "workers")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def extend_predict(sub: argparse._SubParsersAction) -> None:
    """Add the archive options to the `predict` subcommand of `pneumo` (pneumo.cli)."""
    p = sub.choices["predict"]
    for action in p._actions:  # PATH may be left out when a manifest lists the files
        if action.dest == "paths":
            action.nargs = "*"
    g = p.add_argument_group("archive scoring (the [scale] extra: " + SCALE_HINT + ")")
    g.add_argument("--engine", choices=("local", "ray"), default=None,
                   help="score an archive: local (a process pool, one process per core; the "
                        "default once any archive option is given) or ray (Ray Data, one ONNX "
                        "Runtime session per actor). Rows of both are the same")
    g.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster to run on (implies --engine ray; default: a Ray of "
                        "this machine alone, on 127.0.0.1)")
    g.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes (local) or actors (ray) (default: one per CPU)")
    g.add_argument("--manifest", action="append", default=None, metavar="FILE",
                   help="a CSV or Parquet file with a 'path' column: the files to score "
                        "(repeatable; besides any PATH)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="output folder: Parquet shards (what a rerun skips), summary.json and "
                        "predictions.csv (default: beside --csv: results.csv keeps them in "
                        "results.archive/)")
    g.add_argument("--verify", action="store_true",
                   help="a rerun skips a file only if its sha256 is also unchanged (reads "
                        "every file already scored)")
    g.add_argument("--pseudonymise", default=None, metavar="KEYFILE",
                   help="write keyed pseudonyms (HMAC-SHA256) instead of paths and file "
                        "digests; the key is made in KEYFILE if missing: keep it apart from "
                        "the output")
    g.add_argument("--batch-size", type=_positive, default=8, metavar="N",
                   help="files per Ray actor call (default: %(default)s)")
    clinic = p.get_default("func")
    p.set_defaults(func=lambda args: _cmd_predict(args, clinic))


def archive_mode(args: argparse.Namespace) -> bool:
    """True when any archive option was given."""
    return any(getattr(args, name, None) for name in ARCHIVE_OPTIONS)


def _key(path: str) -> bytes:
    """The pseudonymisation key in ``path`` (32 random bytes written there if missing)."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return p.read_bytes()


def _cmd_predict(args: argparse.Namespace, clinic) -> int:
    if not archive_mode(args):
        if not args.paths:
            print("pneumo predict: error: the following arguments are required: PATH",
                  file=sys.stderr)
            return 2
        return clinic(args)
    engine = args.engine or ("ray" if args.address else "local")
    missing = [n for n in (("pyarrow", "ray") if engine == "ray" else ("pyarrow",))
               if importlib.util.find_spec(n) is None]
    if missing:
        print(f"pneumo predict --engine {engine}: needs the scale packages ({', '.join(missing)}"
              f" not installed): run {SCALE_HINT} in the project checkout", file=sys.stderr)
        return 2
    if not (args.paths or args.manifest):
        print("pneumo predict: error: give PATH or --manifest FILE", file=sys.stderr)
        return 2
    if not (args.out or args.csv):
        print("pneumo predict: error: archive scoring needs --out DIR or --csv FILE",
              file=sys.stderr)
        return 2
    from pneumo.scale.job import Job, run_job

    out = Path(args.out) if args.out else Path(args.csv).with_suffix(".archive")
    job = Job(paths=args.paths, manifests=args.manifest or (), out=out,
              model_path=args.model, engine=engine, mode=args.mode, workers=args.workers,
              address=args.address, csv_path=Path(args.csv) if args.csv else None,
              verify=args.verify, batch_size=args.batch_size,
              pseudonymise_key=_key(args.pseudonymise) if args.pseudonymise else None)
    try:
        summary = run_job(job)
    except ValueError as exc:
        print(f"pneumo predict: error: {exc}", file=sys.stderr)
        return 2
    print(summary["text"])
    return 0
