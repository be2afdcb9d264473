"""Settings of the clinic app: defaults, the per-user data folder, validation."""

from __future__ import annotations

import ipaddress
import os
import sys
import unicodedata
from pathlib import Path

from edge_app.imaging import DEFAULT_MAX_PIXELS
from edge_app.onnx_model import DEFAULT_MODEL

APP_NAME = "pneumo"
DATA_DIR_ENV = "PNEUMO_DATA_DIR"
DEFAULT_PORT = 8765
"""The one default TCP port (`pneumo serve`, the executable, the docs)."""

DEFAULTS: dict = {
    "model_path": str(DEFAULT_MODEL),  # ONNX model file (all about the model is read from it)
    "model": None,  # an already loaded OnnxModel to share (tests); overrides model_path
    "data_dir": None,  # history database (and kept images); None -> default_data_dir()
    "keep_images": False,  # store uploaded images in the history database
    "token": None,  # access token; when set every request must carry it
    "require_pin": False,  # loopback on a shared computer: every request needs the access PIN
    "pin_hash": None,  # the PIN's scrypt hash; None with require_pin -> <data_dir>/access-pin
    "host": "127.0.0.1",
    "port": DEFAULT_PORT,
    "threads": 4,  # Waitress worker threads
    "max_upload_bytes": 30 * 1024 * 1024,  # request body limit (HTTP 413)
    "max_pixels": DEFAULT_MAX_PIXELS,  # decoded image pixel limit (HTTP 413); also batch/self-test
    "max_large_decodes": 1,  # images over 8 MB of pixels decoded at once (others wait): memory
    "heatmap_keep": 200,  # heatmaps kept in the history database (most recent)
    "secret_key": None,  # session signing key; None -> random per process
    "trusted_hosts": None,  # Host header names accepted without a token; None -> loopback names
    "clinic_name": "",  # shown on the page and the printed report ("" -> not shown)
}

MAX_CLINIC_NAME = 120
"""Longest clinic name (characters) for the page and report header."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def clean_text(value: str) -> str:
    """Text shown back to people: control, bidi and zero-width characters removed (Cc, Cf).

    Line/paragraph separators and other whitespace become one space; the ends are trimmed.
    One rule for every field shown back (patient reference, file name, clinic name).
    """
    kept = []
    for ch in value:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp", "Zs"):
            kept.append(" ")
        elif cat not in ("Cf", "Cs", "Co", "Cn"):
            kept.append(ch)
    return " ".join("".join(kept).split())


def default_data_dir() -> Path:
    """The user's data folder for this app ($PNEUMO_DATA_DIR overrides)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(base) / APP_NAME


def is_loopback(host: str) -> bool:
    """True for names/addresses that only this computer can reach."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(config: dict | None) -> dict:
    """Defaults merged with the given settings, checked and normalised."""
    cfg = dict(DEFAULTS)
    unknown = set(config or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    cfg.update({k: v for k, v in (config or {}).items()})
    cfg["data_dir"] = Path(cfg["data_dir"]).expanduser() if cfg["data_dir"] else default_data_dir()
    for key in ("threads", "max_upload_bytes", "max_pixels", "max_large_decodes",
                "heatmap_keep", "port"):
        cfg[key] = int(cfg[key])
    if cfg["max_large_decodes"] < 1:
        raise ValueError("max_large_decodes must be at least 1")
    cfg["clinic_name"] = clean_text(str(cfg["clinic_name"] or ""))
    if len(cfg["clinic_name"]) > MAX_CLINIC_NAME:
        raise ValueError(f"the clinic name must have at most {MAX_CLINIC_NAME} characters")
    if cfg["threads"] < 1:
        raise ValueError("threads must be at least 1")
    if cfg["token"] is not None:
        cfg["token"] = str(cfg["token"])
        if len(cfg["token"]) < 8:
            raise ValueError("the access token must have at least 8 characters")
    return cfg
