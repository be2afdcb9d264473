"""How one upload walks through the app's modules (a script, not a test).

    python tests/app/web/measure_upload_trace.py

Sends one POST /api/v1/predict of a fixture X-ray through the Flask test client (in process,
so every call can be seen; a warm-up request first) and prints the pneumo modules entered in
call order, the number of distinct modules and of module switches (a call or return from a
function of one pneumo module into another's). Calls into libraries are not counted.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the checkout's pneumo, then tests/ helpers

from apptools import XRAY_PNEUMONIA  # noqa: E402

from pneumo.app.web.app import create_app  # noqa: E402


def trace_upload(client, data: bytes) -> tuple[list[str], int]:
    """(the pneumo module of every Python frame event during one upload, in order; the calls
    from a function of one pneumo module into another pneumo module's)."""
    seen: list[str] = []
    calls = [0]

    def profile(frame, event, arg):
        if event in ("call", "return"):
            name = frame.f_globals.get("__name__", "")
            if name.startswith("pneumo.") and (not seen or seen[-1] != name):
                seen.append(name)
            caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
            if event == "call" and name.startswith("pneumo.") and caller.startswith(
                    "pneumo.") and caller != name:
                calls[0] += 1

    sys.setprofile(profile)
    try:
        reply = client.post("/api/v1/predict", data={"image": (io.BytesIO(data), "x.jpeg")})
    finally:
        sys.setprofile(None)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return seen, calls[0]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"data_dir": tmp})
        client = app.test_client()
        data = XRAY_PNEUMONIA.read_bytes()
        client.post("/api/v1/predict", data={"image": (io.BytesIO(data), "x.jpeg")})  # warm-up
        walk, calls = trace_upload(client, data)
    modules = list(dict.fromkeys(walk))
    print(f"{len(modules)} modules, {len(walk) - 1} module switches (calls and returns), "
          f"{calls} direct calls from one pneumo module into another, for one upload:")
    for m in modules:
        print(f"  {m}: entered {walk.count(m)} times")
    print("walk: " + " > ".join(m.removeprefix("pneumo.app.") for m in walk))
    return 0


if __name__ == "__main__":
    sys.exit(main())
