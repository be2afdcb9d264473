"""A Debian package of the one-file executable (`python -m installer.build --deb`).

Layout: the binary in ``/opt/pneumo-edge/``, the ``pneumo-edge`` command as a link in
``/usr/bin``, a ``.desktop`` launcher (a terminal window shows the log; closing it stops
the app) and an SVG icon. The package owns nothing in users' data folders
(``~/.local/share/pneumo``): removing or purging it keeps every history. No maintainer
scripts. Built with ``dpkg-deb --root-owner-group`` (gzip: the executable is already
compressed inside, xz only costs minutes); no root needed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tomllib
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pneumo-edge"
LINUX = Path(__file__).resolve().parent / "linux"


def project_version() -> str:
    """The version in pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def architecture() -> str:
    """The Debian architecture of this machine (dpkg --print-architecture)."""
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def control(version: str, arch: str, installed_kib: int) -> str:
    """The DEBIAN/control file."""
    return (f"Package: {PACKAGE}\n"
            f"Version: {version}\n"
            f"Architecture: {arch}\n"
            "Maintainer: pneumo project <pneumo@localhost>\n"
            f"Installed-Size: {installed_kib}\n"
            "Depends: libc6 (>= 2.31)\n"
            "Section: science\n"
            "Priority: optional\n"
            "Homepage: https://localhost/pneumo\n"
            "Description: offline pediatric chest X-ray pneumonia screening (clinic app)\n"
            " The pneumo clinic web app in one executable: it serves the page on this\n"
            " computer only (127.0.0.1) and opens it in the browser. Decision support,\n"
            " not a diagnosis. Each user's history stays in ~/.local/share/pneumo and is\n"
            " kept when the package is removed.\n")


def make_deb(exe: Path, out_dir: Path, *, version: str | None = None,
             arch: str | None = None) -> Path:
    """Package an executable as OUT_DIR/pneumo-edge_VERSION_ARCH.deb; its path."""
    if shutil.which("dpkg-deb") is None:
        raise RuntimeError("dpkg-deb is needed to build the .deb (Debian package dpkg)")
    version, arch = version or project_version(), arch or architecture()
    out_dir.mkdir(parents=True, exist_ok=True)
    tree = out_dir / f"{PACKAGE}-deb-root"
    if tree.exists():
        shutil.rmtree(tree)
    opt = tree / "opt" / PACKAGE
    opt.mkdir(parents=True)
    shutil.copy2(exe, opt / PACKAGE)
    (opt / PACKAGE).chmod(0o755)
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / PACKAGE).symlink_to(f"/opt/{PACKAGE}/{PACKAGE}")
    apps = tree / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy2(LINUX / f"{PACKAGE}.desktop", apps / f"{PACKAGE}.desktop")
    icons = tree / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    icons.mkdir(parents=True)
    shutil.copy2(LINUX / f"{PACKAGE}.svg", icons / f"{PACKAGE}.svg")
    for path in tree.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path == opt / PACKAGE else 0o644)
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    (tree / "DEBIAN").mkdir(mode=0o755)
    (tree / "DEBIAN" / "control").write_text(control(version, arch, (size + 1023) // 1024))
    deb = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
                   check=True, capture_output=True, text=True)
    shutil.rmtree(tree)
    log.info("built %s (%.1f MB)", deb, deb.stat().st_size / 1e6)
    return deb
