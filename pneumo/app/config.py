"""Settings of the clinic app: defaults, the per-user data folder, validation."""

from __future__ import annotations

import ipaddress
import os
import sys
import unicodedata
from pathlib import Path

from pneumo.app import PACKAGE_DIR

# A leaf: every module of the app may import its defaults from here; it imports none of them.
DEFAULT_MODEL = PACKAGE_DIR / "models" / "pneumo.int8.onnx"
"""The model bundled with the app."""
DEFAULT_MAX_PIXELS = 50_000_000
"""Refuse images with more pixels than this (decompression bombs). The one default: the app's
``max_pixels`` setting, the batch command and the self-test all use it."""
MIN_CASES_PER_CLASS = 25
"""Fewest confirmed cases of each class a site-threshold proposal needs
(pneumo.app.clinic.site_thresholds says why)."""
DEFAULT_SETTING = "balanced"
"""The setting (operating mode) an answer's binary label uses unless a script asks for another."""
MAX_PATIENT_REF = 64
"""Characters of a patient reference (the page's field, the API, a DICOM PatientID)."""
"""The setting (operating mode) an answer's binary label uses unless a script asks for another."""

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
    "max_large_uploads": 1,  # request bodies over 8 MB handled at once (others wait): memory
    "heatmap_keep": 200,  # heatmaps kept in the history database (most recent)
    "retain_days": None,  # records older than this many days are purged hourly; None = kept
    "secret_key": None,  # session signing key; None -> random per process
    "trusted_hosts": None,  # Host header names accepted without a token; None -> loopback names
    "clinic_name": "",  # shown on the page and the printed report ("" -> not shown)
    "lang": None,  # the page's language for everyone (e.g. "fr"); None -> each browser's own
    "allow_shutdown": True,  # the page's "Stop the app" (POST /api/v1/shutdown); --no-stop-button
    "site_min_cases": MIN_CASES_PER_CLASS,  # confirmed cases per class a site proposal needs
    # DICOM receiver (pneumo.app.dicom.receiver): off unless dicom_port is set
    "dicom_port": None,  # TCP port of the C-ECHO/C-STORE receiver; None = off, 0 = any free
    "dicom_host": None,  # address it binds; None -> the same as host (loopback by default)
    "dicom_ae_title": "PNEUMO",  # this receiver's AE title (the called AE must match)
    "dicom_allowed_aets": None,  # calling AE titles accepted ("A,B" or a list); None = any
    "dicom_send": None,  # "AET@host:port": Secondary Capture of each result sent there
    "dicom_max_associations": 4,  # associations at once (more are rejected, busy)
    "dicom_max_pdu": 65536,  # largest PDU we receive (bytes; bounds memory per association)
    "dicom_timeout_s": 30.0,  # ACSE and DIMSE timeouts (seconds)
    "dicom_network_timeout_s": 60.0,  # an idle association is closed after this (seconds)
}

MAX_CLINIC_NAME = 120
"""Longest clinic name (characters) for the page and report header."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

AE_TITLE_CHARS = frozenset(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                           "[]^_`abcdefghijklmnopqrstuvwxyz{|}~")
"""Characters of the DICOM default repertoire an AE title may hold (no backslash, no controls)."""


def ae_title(value: str) -> str:
    """A checked DICOM AE title (1-16 characters, not only spaces), trimmed; ValueError if not."""
    title = str(value).strip()
    if not 1 <= len(title) <= 16 or not set(title) <= AE_TITLE_CHARS:
        raise ValueError(f"invalid DICOM AE title {value!r}: 1 to 16 printable ASCII "
                         "characters, no backslash")
    return title


def ae_titles(value: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """A list of AE titles from "A,B" or a list (None or empty -> None: any title)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    titles = [ae_title(t) for t in items if str(t).strip()]
    return titles or None


def dicom_destination(value: str) -> tuple[str, str, int]:
    """(AE title, host, port) from "AET@host:port"; ValueError if it is not that."""
    aet, at, address = str(value).rpartition("@")
    host, colon, port = address.rpartition(":")
    host = host.strip("[]")
    if not (at and colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"invalid DICOM destination {value!r}: use AET@host:port "
                         "(e.g. ORTHANC@192.168.1.10:4242)")
    return ae_title(aet), host, int(port)


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
                "max_large_uploads", "heatmap_keep"):
        cfg[key] = int(cfg[key])
    # None: the port used last time with this data folder, else DEFAULT_PORT, else a free one
    cfg["port"] = None if cfg["port"] is None else int(cfg["port"])
    if cfg["max_large_decodes"] < 1:
        raise ValueError("max_large_decodes must be at least 1")
    if cfg["max_large_uploads"] < 1:
        raise ValueError("max_large_uploads must be at least 1")
    cfg["clinic_name"] = clean_text(str(cfg["clinic_name"] or ""))
    if len(cfg["clinic_name"]) > MAX_CLINIC_NAME:
        raise ValueError(f"the clinic name must have at most {MAX_CLINIC_NAME} characters")
    if cfg["lang"]:
        cfg["lang"] = str(cfg["lang"]).strip().lower().replace("_", "-").split("-")[0]
        if not cfg["lang"].isalpha() or len(cfg["lang"]) > 8:
            raise ValueError("lang must be a language code such as en, fr or ar")
    else:
        cfg["lang"] = None
    cfg["allow_shutdown"] = bool(cfg["allow_shutdown"])
    if cfg["threads"] < 1:
        raise ValueError("threads must be at least 1")
    if cfg["retain_days"] is not None:
        cfg["retain_days"] = int(cfg["retain_days"])
        if cfg["retain_days"] < 1:
            raise ValueError("--retain-days must be at least 1")
    if cfg["dicom_port"] is not None:
        cfg["dicom_port"] = int(cfg["dicom_port"])
        if not 0 <= cfg["dicom_port"] <= 65535:
            raise ValueError("the DICOM port must be between 0 and 65535")
    cfg["dicom_ae_title"] = ae_title(cfg["dicom_ae_title"])
    cfg["dicom_allowed_aets"] = ae_titles(cfg["dicom_allowed_aets"])
    if cfg["dicom_send"]:
        dicom_destination(cfg["dicom_send"])
    else:
        cfg["dicom_send"] = None
    for key in ("dicom_max_associations", "dicom_max_pdu"):
        cfg[key] = int(cfg[key])
        if cfg[key] < 1:
            raise ValueError(f"{key} must be at least 1")
    for key in ("dicom_timeout_s", "dicom_network_timeout_s"):
        cfg[key] = float(cfg[key])
        if not cfg[key] > 0:
            raise ValueError(f"{key} must be positive")
    if cfg["token"] is not None:
        cfg["token"] = str(cfg["token"])
        if len(cfg["token"]) < 8:
            raise ValueError("the access token must have at least 8 characters")
    return cfg
