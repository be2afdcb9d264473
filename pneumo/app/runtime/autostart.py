"""Start the app at login (`--install-autostart` / `--remove-autostart`), per OS.

Linux: an XDG autostart entry ``$XDG_CONFIG_HOME/autostart/pneumo-edge.desktop``; macOS: a
LaunchAgent ``~/Library/LaunchAgents/org.pneumo.edge.plist``; Windows: a ``pneumo-edge.cmd``
in the user's Startup folder. The app starts without opening a browser; opening it from the
menu later (a second launch) shows the running one. Only the Linux entry is tested here.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY_NAME = "pneumo-edge"
MAC_LABEL = "org.pneumo.edge"


def autostart_file(platform: str | None = None) -> Path:
    """Where this OS looks for programs to start at login (for this user)."""
    platform = platform or sys.platform
    home = Path.home()
    if platform == "win32":
        appdata = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
        return (appdata / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup"
                / f"{ENTRY_NAME}.cmd")
    if platform == "darwin":
        return home / "Library" / "LaunchAgents" / f"{MAC_LABEL}.plist"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "autostart" / f"{ENTRY_NAME}.desktop"


CONSOLE_SUFFIX = "-console"
"""The console twin of the windowed Windows program (pneumo-edge-console.exe)."""


def app_executable(executable: str | None = None) -> str:
    """The program to start at login: the windowed one when run from its console twin."""
    exe = Path(executable or sys.executable)
    if exe.stem.endswith(CONSOLE_SUFFIX):
        windowed = exe.with_name(exe.stem[: -len(CONSOLE_SUFFIX)] + exe.suffix)
        if windowed.is_file():
            return str(windowed)
    return str(exe)


def launch_command(data_dir: str | None = None) -> list[str]:
    """The command started at login: this executable (or `python -m pneumo.app serve`)."""
    if getattr(sys, "frozen", False):
        cmd = [app_executable(), "--no-browser"]
    else:
        cmd = [sys.executable, "-m", "pneumo.app", "serve"]
    if data_dir:
        cmd += ["--data-dir", str(Path(data_dir).expanduser().resolve())]
    return cmd


def desktop_exec(cmd: list[str]) -> str:
    """A command as a .desktop Exec value (quoting rules of the Desktop Entry spec)."""
    out = []
    for arg in cmd:
        arg = arg.replace("%", "%%")
        if any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
            for c in '\\"`$':
                arg = arg.replace(c, "\\" + c)
            arg = f'"{arg}"'
        out.append(arg)
    return " ".join(out)


def _content(cmd: list[str], platform: str) -> bytes:
    if platform == "win32":
        line = subprocess.list2cmdline(cmd)
        return f"@echo off\r\nstart \"\" /min {line}\r\n".encode()
    if platform == "darwin":
        import plistlib  # macOS only; it loads the XML parser

        return plistlib.dumps({"Label": MAC_LABEL, "ProgramArguments": cmd,
                               "RunAtLoad": True})
    if not getattr(sys, "frozen", False):  # unfrozen: the project must stay importable
        root = str(Path(__file__).resolve().parents[3])
        cmd = ["env", f"PYTHONPATH={root}", *cmd]
    return ("[Desktop Entry]\n"
            "Type=Application\n"
            "Name=Pneumo clinic app\n"
            "Comment=Start the pneumonia screening clinic app in the background at login\n"
            f"Exec={desktop_exec(cmd)}\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n").encode()


def install_autostart(data_dir: str | None = None, platform: str | None = None) -> Path:
    """Write this user's start-at-login entry; its path."""
    platform = platform or sys.platform
    path = autostart_file(platform)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_content(launch_command(data_dir), platform))
    log.info("start at login: %s", path)
    return path


def remove_autostart(platform: str | None = None) -> Path | None:
    """Delete the start-at-login entry; its path, or None if there was none."""
    path = autostart_file(platform)
    if not path.exists():
        return None
    path.unlink()
    log.info("start at login removed: %s", path)
    return path


def add_autostart_options(p) -> None:
    """--install-autostart / --remove-autostart on an argparse parser."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--install-autostart", action="store_true",
                   help="start the app (without a browser) when this user logs in; then exit")
    g.add_argument("--remove-autostart", action="store_true",
                   help="stop starting the app at login; then exit")


def handle_autostart(args) -> int | None:
    """Run --install/--remove-autostart if asked (the exit code), else None."""
    if getattr(args, "install_autostart", False):
        path = install_autostart(args.data_dir)
        print(f"the app will start when you log in: {path}")
        return 0
    if getattr(args, "remove_autostart", False):
        path = remove_autostart()
        print(f"removed {path}" if path else "the app was not set to start at login")
        return 0
    return None
