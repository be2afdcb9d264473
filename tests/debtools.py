"""Checks of a built Debian package (stdlib only: also used by test_executable.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from installer.deb import PACKAGE, project_version


def check_deb(deb: Path, root: Path) -> Path:
    """The checks of a built .deb (shared with the slow test); unpacks it into root."""
    info = subprocess.run(["dpkg-deb", "--info", str(deb)], capture_output=True, text=True,
                          check=True).stdout
    assert f"Package: {PACKAGE}" in info and f"Version: {project_version()}" in info
    assert "postrm" not in info and "prerm" not in info  # no scripts: histories are kept
    contents = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                              text=True, check=True).stdout
    paths = {line.split()[5].lstrip(".") for line in contents.splitlines()}
    assert {f"/opt/{PACKAGE}/{PACKAGE}", f"/usr/bin/{PACKAGE}",
            f"/usr/share/applications/{PACKAGE}.desktop",
            f"/usr/share/icons/hicolor/scalable/apps/{PACKAGE}.svg"} <= paths
    assert all(p.startswith(("/opt/", "/usr/")) or p in ("/", "/opt", "/usr") for p in paths)
    assert "root/root" in contents and "-rwxr-xr-x" in contents
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    link = root / "usr" / "bin" / PACKAGE
    assert link.is_symlink() and os.readlink(link) == f"/opt/{PACKAGE}/{PACKAGE}"
    desktop = root / "usr" / "share" / "applications" / f"{PACKAGE}.desktop"
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True,
                               text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout
    text = desktop.read_text()
    assert f"Exec={PACKAGE}\n" in text and f"Icon={PACKAGE}\n" in text
    binary = root / "opt" / PACKAGE / PACKAGE
    assert os.access(binary, os.X_OK)
    return binary
