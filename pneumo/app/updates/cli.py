"""`pneumo keys generate`, `pneumo model sign|install|rollback|status`: signed model updates.

Registered by pneumo.cli; the executable's --install-model calls `install_and_report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo.app.config import DATA_DIR_ENV


def data_dir_of(arg: str | None) -> Path:
    """The data folder the server would use with this --data-dir (config.resolve)."""
    from pneumo.app.config import resolve

    return Path(resolve({"data_dir": arg})["data_dir"])


def install_and_report(model: str, *, data_dir: str | None, trusted_key: str | None,
                       allow_unsigned: bool) -> int:
    """Install a model and print what was checked; 0 installed, 2 refused."""
    from pneumo.app.updates.model_store import ModelStoreError, install_model

    folder = data_dir_of(data_dir)
    if not Path(model).is_file():
        print(f"error: model file not found: {model}", file=sys.stderr)
        return 2
    try:
        done = install_model(model, folder, trusted_key=trusted_key,
                             allow_unsigned=allow_unsigned)
    except (ModelStoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in done.lines:
        print(line)
    e = done.entry
    print(f"installed: {e['name']} {e['version']} (sha256 {e['sha256']}) in "
          f"{folder / 'models'}; previous: {done.previous.get('source')} model "
          f"sha256 {done.previous['sha256']}")
    print("restart the app to use it; `pneumo model rollback` returns to the previous one")
    return 0


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from pneumo.app.updates.signing import generate_keys, key_id, load_public_key

    try:
        private, public = generate_keys(args.out)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"private key (keep it secret, off the clinic computers): {private}")
    print(f"public key (id {key_id(load_public_key(public))}): {public}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from pneumo.app.updates.signing import sign_model

    try:
        out = sign_model(args.model, args.key)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"signature: {out}")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    return install_and_report(args.model, data_dir=args.data_dir, trusted_key=args.trusted_key,
                              allow_unsigned=args.allow_unsigned)


def _cmd_rollback(args: argparse.Namespace) -> int:
    from pneumo.app.updates.model_store import ModelStoreError, rollback

    try:
        left, now = rollback(data_dir_of(args.data_dir))
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rolled back from {left['name']} {left['version']} (sha256 {left['sha256']})")
    print(f"now: {now.get('name', 'the bundled model')} "
          f"{now.get('version', '')} (sha256 {now['sha256']}, {now['source']}); restart the "
          "app to use it")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pneumo.app.updates.model_store import ModelStoreError, active_entry, bundled_entry

    try:
        entry = active_entry(data_dir_of(args.data_dir))
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    entry = entry or bundled_entry()
    when = f" on {entry['installed_at']} by {entry['by']}" if "installed_at" in entry else ""
    print(f"active model: {entry['source']}{when}, sha256 {entry['sha256']}")
    return 0


def _data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help=f"data folder (default: ${DATA_DIR_ENV} or the user's data folder)")


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register `keys` and `model` on an argparse subparsers object."""
    k = sub.add_parser("keys", help="signing keys for model updates")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = ksub.add_parser("generate", help="write an Ed25519 key pair (private key 0600)")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the two key files")
    g.set_defaults(func=_cmd_keys_generate)

    m = sub.add_parser("model", help="sign, install or roll back the clinic app's model")
    msub = m.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    s = msub.add_parser("sign", help="write MODEL.onnx.sig beside the model")
    s.add_argument("model", metavar="MODEL.onnx", help="the ONNX model file to sign")
    s.add_argument("--key", required=True, metavar="PRIVATE", help="Ed25519 private key (PEM)")
    s.set_defaults(func=_cmd_sign)
    i = msub.add_parser("install", help="verify, check, self-test and activate a model")
    i.add_argument("model", metavar="MODEL.onnx",
                   help="the ONNX model file to install (signature: MODEL.onnx.sig beside it)")
    i.add_argument("--trusted-key", default=None, metavar="PUBLIC",
                   help="public key the signature must match (default: the release key "
                        "inside the app)")
    i.add_argument("--allow-unsigned", action="store_true",
                   help="install without a valid signature (logged in the audit table)")
    _data_dir_option(i)
    i.set_defaults(func=_cmd_install)
    r = msub.add_parser("rollback", help="return to the model used before the last install")
    _data_dir_option(r)
    r.set_defaults(func=_cmd_rollback)
    st = msub.add_parser("status", help="which model the app will use")
    _data_dir_option(st)
    st.set_defaults(func=_cmd_status)
