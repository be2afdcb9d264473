"""Cold-start measurement against a stand-in executable (a tiny stdlib HTTP server)."""

import os
import sys

from pneumo.bench.executable import find_executable, run

FAKE_EXE = '''#!{python}
import argparse, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--no-browser", action="store_true")
p.add_argument("--data-dir", required=True)
args = p.parse_args()
assert args.no_browser


class H(BaseHTTPRequestHandler):
    def _answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(200 if self.path == "/healthz" else 404, {{"status": "ok"}})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(200 if self.path == "/api/v1/predict" else 404, {{"label": "NORMAL"}})

    def log_message(self, *a):
        pass


HTTPServer(("127.0.0.1", args.port), H).serve_forever()
'''


def test_cold_start_with_stand_in_executable(tmp_path):
    exe = tmp_path / "pneumo-edge"
    exe.write_text(FAKE_EXE.format(python=sys.executable))
    exe.chmod(0o755)
    assert find_executable(exe) == exe
    assert find_executable(tmp_path / "missing") is None
    res = run(exe, b"\xff\xd8\xff" + b"0" * 100, runs=3)
    assert res["status"] == "ok" and res["runs"] == 3 and len(res["launches"]) == 3
    assert res["exe_bytes"] == os.path.getsize(exe)
    for launch in res["launches"]:
        assert 0 < launch["healthz_s"] <= launch["first_prediction_s"]
    assert res["cold_start_median_s"] > 0


def test_one_folder_build_is_found(tmp_path):
    folder = tmp_path / "pneumo-edge"
    folder.mkdir()
    exe = folder / "pneumo-edge"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_executable(folder) == exe


def test_missing_executable_is_skipped(tmp_path):
    res = run(tmp_path / "nothing", b"x", runs=1)
    assert res["status"] == "skipped" and "no executable" in res["note"]
