"""`pneumo serve` and `pneumo predict`: registered by pneumo.cli via add_subcommands.

Light to import: no ONNX Runtime, Flask or Waitress until a subcommand runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from edge_app.config import DATA_DIR_ENV, DEFAULTS


def _default_model() -> str:
    return str(DEFAULTS["model_path"])


def _cmd_serve(args: argparse.Namespace) -> int:
    from edge_app.server import run_server

    config = {
        "host": args.host,
        "port": args.port,
        "model_path": args.model,
        "data_dir": args.data_dir,  # None -> $PNEUMO_DATA_DIR or the user's data folder
        "keep_images": args.keep_images,
        "token": args.token,
        "threads": args.threads,
        "clinic_name": args.clinic_name,
    }
    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    try:
        return run_server(config, open_browser=args.open_browser)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_predict(args: argparse.Namespace) -> int:
    from edge_app.batch import run_batch

    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    return run_batch(args.paths, model_path=args.model, mode=args.mode, csv_path=args.csv)


def add_clinic_name_option(p: argparse.ArgumentParser) -> None:
    """--clinic-name (shared with the pneumo-edge launcher; default from config.DEFAULTS)."""
    p.add_argument("--clinic-name", default=DEFAULTS["clinic_name"], metavar="NAME",
                   help="clinic name shown on the page and on printed reports "
                        "(default: none)")


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register `serve` and `predict` on an argparse subparsers object."""
    p = sub.add_parser("serve", help="run the clinic web app (Waitress)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; anything else needs a token)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free)")
    p.add_argument("--model", default=_default_model(), help="ONNX model file")
    p.add_argument("--data-dir", default=None,
                   help=f"history folder (default ${DATA_DIR_ENV} or the user's data folder)")
    p.add_argument("--open-browser", action="store_true", help="open the page in a browser")
    p.add_argument("--keep-images", action="store_true",
                   help="also store uploaded images in the history database")
    p.add_argument("--token", default=None,
                   help="access token (required off-loopback; generated and printed if absent)")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                   help="worker threads (default 4)")
    add_clinic_name_option(p)
    p.set_defaults(func=_cmd_serve)

    q = sub.add_parser("predict", help="predict image files/folders without a server")
    q.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    q.add_argument("--csv", default=None, metavar="FILE", help="also write the results as CSV")
    q.add_argument("--mode", default="balanced", help="operating mode: balanced or screening")
    q.add_argument("--model", default=_default_model(), help="ONNX model file")
    q.set_defaults(func=_cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    """A parser with just serve and predict (for `python -m edge_app`)."""
    parser = argparse.ArgumentParser(prog="pneumo", description="Pneumonia screening clinic app.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m edge_app` (and of a packaged executable)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
