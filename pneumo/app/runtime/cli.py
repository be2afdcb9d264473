"""`pneumo serve`, `pneumo predict` and `pneumo history`: registered by pneumo.cli via add_subcommands.

Light to import: no ONNX Runtime, Flask or Waitress until a subcommand runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pneumo.app.config import DATA_DIR_ENV, DEFAULT_SETTING, DEFAULTS, SETTINGS
from pneumo.app.runtime.logs import setup_logging


def _default_model() -> str:
    return str(DEFAULTS["model_path"])


def serve_config(args: argparse.Namespace, **overrides) -> dict:
    """The run_server settings from the flags of add_serve_arguments (plus overrides)."""
    config = {s.name: getattr(args, s.name) for s in SETTINGS if s.flag}
    config["model_path"] = args.model or _default_model()
    config.update(overrides)
    return config


def serve_and_report(config: dict, *, open_browser: bool) -> int:
    """run_server with start-up failures printed plainly; returns the exit code.

    2: the settings or the data folder / history database cannot be used (the message says
    which and what to do); 1: the address cannot be listened on.
    """
    from pneumo.app.history.faults import StorageError
    from pneumo.app.runtime.server import run_server

    try:
        return int(run_server(config, open_browser=open_browser) or 0)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = getattr(exc, "address", None) or f"{config['host']}:{config['port']}"
        print(f"error: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_serve(args: argparse.Namespace) -> int:
    from pneumo.app.runtime.autostart import handle_autostart
    from pneumo.app.updates.model_store import ModelStoreError, serving_model

    done = handle_autostart(args)
    if done is not None:
        return done
    try:  # no --model: the model installed in the data folder, else the bundled one
        args.model = str(serving_model(args.model, args.data_dir))
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):  # the start-up lines may be in any language:
        if stream is not None and hasattr(stream, "reconfigure"):  # never fail on a console
            stream.reconfigure(errors="replace")  # that cannot show them (Windows code pages)
    return serve_and_report(serve_config(args), open_browser=args.open_browser)


def _cmd_predict(args: argparse.Namespace) -> int:
    from pneumo.app.runtime.batch import run_batch

    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    return run_batch(args.paths, model_path=args.model, mode=args.mode, csv_path=args.csv)


def _history_path(args: argparse.Namespace):
    """The history database the server would use with this --data-dir (config.resolve)."""
    from pneumo.app.config import resolve
    from pneumo.app.history.schema import DB_NAME

    return resolve({"data_dir": args.data_dir})["data_dir"] / DB_NAME


def _cmd_history_check(args: argparse.Namespace) -> int:
    import getpass

    from pneumo.app.history.faults import StorageError
    from pneumo.app.history.repair import accept_missing, check

    if args.accept_missing:
        try:
            missing = accept_missing(_history_path(args), by=getpass.getuser())
        except StorageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("no acknowledged record is missing: nothing to accept" if missing is None else
              f"accepted: {missing} acknowledged records are missing from the file; the app "
              "goes on with the records it holds (recorded in the audit table)")
    verdict = check(_history_path(args))
    print(verdict.message, file=sys.stdout if verdict.ok else sys.stderr)
    return 0 if verdict.ok else 2


def _cmd_history_repair(args: argparse.Namespace) -> int:
    from pneumo.app.history.repair import repair

    path = _history_path(args)
    if not path.is_file():
        print(f"error: no history database at {path}", file=sys.stderr)
        return 2
    try:
        done = repair(path)
    except OSError as exc:
        print(f"error: cannot repair {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"backup of the original: {done.backup}")
    for table, kept in done.recovered.items():
        lost = done.lost[table]
        print(f"{table}: {kept} rows recovered, "
              f"{'an unknown number of' if lost is None else lost} lost")
    if done.unreadable:
        print(f"unreadable (nothing recovered): {', '.join(done.unreadable)}")
    print(f"repaired: {path}")
    return 0


def _cmd_history_backup(args: argparse.Namespace) -> int:
    import sqlite3

    from pneumo.app.history.backup import backup_history

    path = _history_path(args)
    try:
        counts = backup_history(path, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.DatabaseError, OSError) as exc:
        print(f"error: cannot back up {path}: {exc}", file=sys.stderr)
        return 2
    print(f"backup of {path}: {args.out}")
    print(", ".join(f"{table} {n}" for table, n in counts.items()))
    return 0


def _cmd_history_purge(args: argparse.Namespace) -> int:
    import getpass

    from pneumo.app.history.faults import StorageError
    from pneumo.app.history.store import HistoryStore

    path = _history_path(args)
    if not path.is_file():
        print(f"error: no history database at {path}", file=sys.stderr)
        return 2
    try:
        store = HistoryStore(path)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        done = store.purge(args.before, by=getpass.getuser())
    except ValueError as exc:
        print(f"error: --before {args.before!r}: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    span = f" ({done['oldest']} .. {done['newest']})" if done["predictions"] else ""
    print(f"purged before {done['before']}: {done['predictions']} records{span}, "
          f"{done['heatmaps']} heatmaps, {done['images']} kept images, "
          f"{done['refusals']} refusal counts; recorded in the audit table")
    return 0


def add_serve_arguments(p: argparse.ArgumentParser, *, executable: bool = False) -> None:
    """The serving flags of `pneumo serve` and the `pneumo-edge` executable (one declaration).

    Each flag, its default and its help come from config.SETTINGS. --port and --model default
    to None: the port used last time with the data folder (else the default one, else a free
    one) and the model installed in the data folder (else the bundled one).
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in SETTINGS:
        if s.flag is None:
            continue
        where = p if s.group is None else groups.setdefault(s.group,
                                                              p.add_argument_group(s.group))
        kwargs = {"dest": s.name, "help": s.help}
        if s.action:
            kwargs["action"] = s.action
        else:
            kwargs.update(default=s.cli_default, type=s.type, metavar=s.metavar)
        where.add_argument(s.flag, **kwargs)
        if s.name == "port":  # the model file right after the address, as always
            where.add_argument("--model", default=None, help=(
                "ONNX model file (default: the one installed with --install-model in the data "
                "folder, else the model inside the executable)" if executable else
                "ONNX model file (default: the one installed with `pneumo model install` in "
                "the data folder, else the bundled model)"))


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register `serve`, `predict` and `history` on an argparse subparsers object."""
    p = sub.add_parser("serve", help="run the clinic web app (Waitress)")
    add_serve_arguments(p)
    p.add_argument("--open-browser", action="store_true",
                   help="open the page in a browser (if the app already runs for this data "
                        "folder: open that one and exit 0)")
    from pneumo.app.runtime.autostart import add_autostart_options

    add_autostart_options(p)
    p.set_defaults(func=_cmd_serve)

    q = sub.add_parser("predict", help="predict image files/folders without a server")
    q.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    q.add_argument("--csv", default=None, metavar="FILE", help="also write the results as CSV")
    q.add_argument("--mode", default=DEFAULT_SETTING,
                   help="operating point, one of the model's thresholds: balanced or screening "
                        "(more sensitive) (default: %(default)s)")
    q.add_argument("--model", default=_default_model(),
                   help="ONNX model file (default: the bundled model, %(default)s)")
    q.set_defaults(func=_cmd_predict)

    h = sub.add_parser("history", help="check, repair, back up or purge the history database")
    hsub = h.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    for name, func, text in (
            ("check", _cmd_history_check,
             "read-only integrity, schema and missing-records check (exit 0 ok, 2 damaged "
             "or records missing)"),
            ("repair", _cmd_history_repair,
             "back the file up, salvage the readable rows into a fresh database (stop the "
             "server first)"),
            ("backup", _cmd_history_backup,
             "copy the history database to --out FILE (safe while the app is serving)"),
            ("purge", _cmd_history_purge,
             "delete records, heatmaps and kept images made before --before DATE (audited)")):
        c = hsub.add_parser(name, help=text)
        c.add_argument("--data-dir", default=None,
                       help=f"history folder (default: ${DATA_DIR_ENV} or the user's data folder)")
        if name == "check":
            c.add_argument("--accept-missing", action="store_true",
                           help="the file holds fewer records than the app saved (a backup "
                           "put back, a lost file): go on with what it holds (audited)")
        if name == "backup":
            c.add_argument("--out", required=True, metavar="FILE", help="the backup file")
        if name == "purge":
            c.add_argument("--before", required=True, metavar="DATE",
                           help="YYYY-MM-DD or an ISO date-time (UTC if no zone)")
        c.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    """A parser with just serve and predict (for `python -m pneumo.app`)."""
    parser = argparse.ArgumentParser(prog="pneumo", description="Pneumonia screening clinic app.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pneumo.app` (and of a packaged executable)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
