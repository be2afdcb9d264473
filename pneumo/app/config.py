"""Settings of the clinic app: defaults, the per-user data folder, validation."""

from __future__ import annotations

import ipaddress
import os
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

APP_NAME = "pneumo"
DATA_DIR_ENV = "PNEUMO_DATA_DIR"
DEFAULT_PORT = 8765
"""The one default TCP port (`pneumo serve`, the executable, the docs)."""

_SAME = object()


@dataclass(frozen=True)
class Setting:
    """One app setting: its default, what it does, and its `pneumo serve` flag (if it has one).

    The one list (in the manner of Datasette's ``Setting(name, default, help)``) from which
    DEFAULTS, the serve flags with their help, and the docs' settings table are all made.
    """

    name: str
    default: Any
    help: str
    flag: str | None = None  # e.g. "--threads"; None: a setting without a flag
    type: Callable[[str], Any] | None = None  # the flag's value type (argparse)
    action: str | None = None  # "store_true" / "store_false" (--no-...: turns it off)
    metavar: str | None = None
    group: str | None = None  # the flags' group heading in --help
    flag_default: Any = _SAME  # what the flag gives when absent (default: the default)

    @property
    def cli_default(self) -> Any:
        """The flag's default (None for --port: the port used last time, see resolve)."""
        return self.default if self.flag_default is _SAME else self.flag_default

    def help_text(self) -> str:
        """The help with its default filled in (for docs; argparse fills %(default)s itself)."""
        return self.help.replace("%(default)s", str(self.cli_default))


DICOM_GROUP = "DICOM receiver (off unless --dicom-port is given)"

SETTINGS: tuple[Setting, ...] = (
    Setting("model_path", str(DEFAULT_MODEL),
            "ONNX model file (all about the model is read from it); the --model flag defaults "
            "to the one installed in the data folder, else the bundled one"),
    Setting("model", None, "an already loaded OnnxModel to share (tests); overrides model_path"),
    Setting("host", "127.0.0.1",
            "address to bind; any other than the default needs a token (default: %(default)s)",
            flag="--host"),
    Setting("port", DEFAULT_PORT,
            f"TCP port (default: the one used last time with this data folder, else "
            f"{DEFAULT_PORT}, else a free one; 0 = any free port)",
            flag="--port", type=int, flag_default=None),
    Setting("data_dir", None,
            f"history folder (default: ${DATA_DIR_ENV} or the user's data folder)",
            flag="--data-dir"),
    Setting("keep_images", False, "also store uploaded images in the history database",
            flag="--keep-images", action="store_true"),
    Setting("token", None,
            "access token (required off-loopback; generated and printed if absent)",
            flag="--token"),
    Setting("threads", 4, "worker threads (default: %(default)s)", flag="--threads", type=int),
    Setting("require_pin", False,
            "shared computer: every request needs an access PIN (set on first use from "
            "$PNEUMO_PIN or the console; stored hashed in the data folder)",
            flag="--require-pin", action="store_true"),
    Setting("pin_hash", None,
            "the PIN's scrypt hash; None with require_pin -> <data_dir>/access-pin"),
    Setting("pin_free_failures", 4,
            "wrong PINs in a row answered at once; each further one pauses all PIN checks"),
    Setting("pin_delay_s", 1.0,
            "the first pause after the free wrong PINs (seconds); it doubles with each one more"),
    Setting("pin_max_delay_s", 30.0,
            "the longest pause (seconds): the right PIN works this long after the last wrong "
            "one; the 8-character minimum PIN assumes it (lower it only in tests)"),
    Setting("max_upload_bytes", 30 * 1024 * 1024, "request body limit (HTTP 413)"),
    Setting("max_pixels", DEFAULT_MAX_PIXELS,
            "decoded image pixel limit (HTTP 413); also the batch command and the self-test"),
    Setting("max_large_decodes", 1,
            "images over 8 MB of pixels decoded at once; others wait (memory) "
            "(default: %(default)s)", flag="--max-large-decodes", type=int, metavar="N"),
    Setting("max_large_uploads", 1,
            "request bodies over 8 MB handled at once; others wait (memory)"),
    Setting("heatmap_keep", 200, "heatmaps kept in the history database (the most recent)"),
    Setting("history_busy_timeout_s", 10.0,
            "seconds a history read or write waits while another program (a backup or sync "
            "tool, an antivirus scan) holds the database locked; then an upload is answered "
            "503 (retry) and start-up says it is in use (default: %(default)s)",
            flag="--history-busy-timeout", type=float, metavar="SECONDS"),
    Setting("clinic_name", "",
            "clinic name shown on the page and on printed reports (default: none)",
            flag="--clinic-name", metavar="NAME"),
    Setting("lang", None,
            "the page's language for every browser (en, fr, es, pt, sw, ar; default: each "
            "browser's own, or $PNEUMO_LANG)", flag="--lang", metavar="CODE"),
    Setting("allow_shutdown", True,
            "no \"Stop the app\" button on the page (POST /api/v1/shutdown is refused); stop "
            "with Ctrl+C or by closing the console window",
            flag="--no-stop-button", action="store_false"),
    Setting("retain_days", None,
            "delete records (with heatmaps and kept images) older than N days, at start and "
            "every hour; each purge is audited (default: keep all)",
            flag="--retain-days", type=int, metavar="N"),
    Setting("secret_key", None, "session signing key; None -> random per process"),
    Setting("trusted_hosts", None,
            "Host header names accepted without a token; None -> the loopback names"),
    Setting("site_min_cases", MIN_CASES_PER_CLASS,
            "confirmed cases of each class a site-threshold proposal needs"),
    Setting("dicom_port", None,
            "receive images from X-ray units and PACS (C-ECHO, C-STORE of CR/DX) on this TCP "
            "port, e.g. 11112 (0 = any free)",
            flag="--dicom-port", type=int, metavar="PORT", group=DICOM_GROUP),
    Setting("dicom_host", None,
            "address the DICOM receiver binds (default: the same as --host; 0.0.0.0 for a "
            "unit on the network)", flag="--dicom-host", metavar="ADDRESS", group=DICOM_GROUP),
    Setting("dicom_ae_title", "PNEUMO",
            "this receiver's AE title (default: %(default)s)",
            flag="--ae-title", metavar="AET", group=DICOM_GROUP),
    Setting("dicom_allowed_aets", None, "only these calling AE titles may send (default: any)",
            flag="--allowed-aets", metavar="A,B", group=DICOM_GROUP),
    Setting("dicom_send", None,
            "send each result back as a DICOM Secondary Capture (heatmap, result and "
            "\"decision support, not a diagnosis\" burned in) to this PACS or viewer, in the "
            "image's study", flag="--dicom-send", metavar="AET@HOST:PORT", group=DICOM_GROUP),
    Setting("dicom_max_associations", 8,
            "DICOM associations at once, all addresses together (more are rejected, busy)"),
    Setting("dicom_max_per_address", 2,
            "DICOM connections one address may hold at once (more are closed at once); raise "
            "it for an X-ray unit that sends over more associations in parallel "
            "(default: %(default)s)",
            flag="--dicom-max-per-address", type=int, metavar="N", group=DICOM_GROUP),
    Setting("dicom_request_timeout_s", 5.0,
            "a DICOM connection that has not sent its association request within this is "
            "closed (seconds)"),
    Setting("dicom_max_pdu", 65536,
            "largest DICOM PDU received (bytes; bounds memory per association)"),
    Setting("dicom_timeout_s", 30.0, "DICOM ACSE and DIMSE timeouts (seconds)"),
    Setting("dicom_network_timeout_s", 60.0,
            "an idle DICOM association is closed after this (seconds)"),
)
"""Every setting of the app, in the order of `pneumo serve --help`."""

DEFAULTS: dict = {s.name: s.default for s in SETTINGS}
"""Setting name -> default (made from SETTINGS)."""


def settings_markdown() -> str:
    """The settings table for the docs (name, serve flag, default, what it does)."""
    rows = ["| setting | flag | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "bundled model" if s.name == "model_path" else repr(s.default)
        rows.append(f"| `{s.name}` | {f'`{s.flag}`' if s.flag else ''} | `{default}` | "
                    f"{s.help_text()} |")
    return "\n".join(rows)


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
    cfg["history_busy_timeout_s"] = float(cfg["history_busy_timeout_s"])
    if not 0 < cfg["history_busy_timeout_s"] <= 600:
        raise ValueError("--history-busy-timeout must be between 0 and 600 seconds")
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
    for key in ("dicom_max_associations", "dicom_max_pdu", "dicom_max_per_address"):
        cfg[key] = int(cfg[key])
        if cfg[key] < 1:
            raise ValueError(f"{key} must be at least 1")
    for key in ("dicom_timeout_s", "dicom_network_timeout_s", "dicom_request_timeout_s"):
        cfg[key] = float(cfg[key])
        if not cfg[key] > 0:
            raise ValueError(f"{key} must be positive")
    if cfg["token"] is not None:
        cfg["token"] = str(cfg["token"])
        if len(cfg["token"]) < 8:
            raise ValueError("the access token must have at least 8 characters")
    return cfg
