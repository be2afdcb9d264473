"""The Debian package layout (`python -m installer.build --deb`), built with the real
dpkg-deb around a small stand-in program and unpacked into a throwaway root (`dpkg -x`).
The package of the real executable is built, unpacked and self-tested in test_executable.py
(test_deb_package_of_the_executable, marked slow)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from debtools import check_deb

from installer.build import main as build_main
from installer.deb import PACKAGE, make_deb, project_version

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None or sys.platform != "linux",
                                reason="needs dpkg-deb (Debian/Ubuntu)")


def test_deb_layout_from_a_stand_in_program(tmp_path):
    program = tmp_path / "pneumo-edge"
    program.write_text("#!/bin/sh\necho stand-in \"$@\"\n")
    program.chmod(0o755)
    deb = make_deb(program, tmp_path / "dist")
    assert deb.name == f"{PACKAGE}_{project_version()}_{deb.name.rsplit('_', 1)[1]}"
    binary = check_deb(deb, tmp_path / "root")
    out = subprocess.run([str(binary), "--self-test"], capture_output=True, text=True)
    assert out.stdout.strip() == "stand-in --self-test"
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [deb.name]


def test_build_deb_from_an_existing_executable(tmp_path):
    program = tmp_path / "exe"
    program.write_text("#!/bin/sh\n")
    assert build_main(["--deb-from", str(program), "--dist", str(tmp_path / "d")]) == 0
    assert len(list((tmp_path / "d").glob(f"{PACKAGE}_*.deb"))) == 1
    assert build_main(["--deb", "--onedir", "--dist", str(tmp_path / "d")]) == 2
