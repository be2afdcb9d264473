"""Peak memory of a real Waitress server per hostile upload (a script, not a test).

    PNEUMO_TEST_MODEL=path/to/model.onnx python tests/app/web/measure_memory.py [CASE ...]

For each case a fresh server is started, warmed up with one fixture X-ray, then sent the
upload (or several at once); it prints the HTTP status, the error code and the server's
peak RSS (VmHWM) and RSS afterwards, in MB.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bombs  # noqa: E402
from apptools import XRAY_NORMAL, post_image, start_server  # noqa: E402

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL  # noqa: E402


def _compressed(syntax: str) -> bytes:
    """A 2-megapixel X-ray DICOM in one compressed transfer syntax (dcmtk/pydicom)."""
    from pneumo.bench.dicom_decode import variants
    from pneumo.bench.preprocessing import SIZE_2MP, base_image

    data = variants(base_image(SIZE_2MP))[syntax]
    if isinstance(data, str):
        raise RuntimeError(f"cannot make {syntax}: {data}")
    return data


CASES = {
    "ct_small.dcm (CT)": (lambda: bombs.pydicom_test_file("CT_small.dcm"), 1),
    "JPEG2000.dcm (NM)": (lambda: bombs.pydicom_test_file("JPEG2000.dcm"), 1),
    "x-ray as CT": (lambda: bombs.xray_dicom(Modality="CT"), 1),
    "x-ray as MR": (lambda: bombs.xray_dicom(Modality="MR"), 1),
    "x-ray as NM": (lambda: bombs.xray_dicom(Modality="NM"), 1),
    "x-ray as US": (lambda: bombs.xray_dicom(Modality="US"), 1),
    "x-ray lateral (LL)": (lambda: bombs.xray_dicom(ViewPosition="LL"), 1),
    "deflated 100 KB, 1x1": (lambda: bombs.deflated_dicom_bomb(100), 1),
    "deflated 1 MB, 1x1": (lambda: bombs.deflated_dicom_bomb(1000), 1),
    "png16 7000x7000": (bombs.png16_bomb, 1),
    "float tiff 7000x7000": (bombs.float_tiff_bomb, 1),
    "float tiff 7000x7000 x4": (bombs.float_tiff_bomb, 4),
    "WindowWidth=0": (lambda: bombs.window_width_dicom(0.0), 1),
    "x-ray JPEG-LS (2 MP)": (lambda: _compressed("jpeg_ls_lossless"), 1),
    "x-ray JPEG extended 12-bit (2 MP)": (lambda: _compressed("jpeg_extended"), 1),
    # beyond the list
    "deflated 1 MB, private element": (lambda: bombs.deflated_dicom_bomb(1000, where="private"),
                                       1),
    "deflated 7000x7000 16-bit (as declared)": (
        lambda: bombs.deflated_dicom_bomb(0, rows=7000, cols=7000), 1),
    "png16 7000x7000 x4": (bombs.png16_bomb, 4),
    "x-ray png16 7000x7000": (lambda: bombs.big_xray(7000, "PNG16"), 1),
    "x-ray RGBA png 7000x7000": (lambda: bombs.big_xray(7000, "RGBA"), 1),
    "DICOM header of 3.5 M tiny elements": (bombs.element_bomb, 1),
    "RGBA png 7000x7000, 29 MB upload": (bombs.max_size_rgba_png, 1),
    "RGBA png 7000x7000, 29 MB upload x4": (bombs.max_size_rgba_png, 4),
}


def proc_mb(pid: int, key: str) -> float:
    """VmHWM / VmRSS of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def measure(model: Path, name: str) -> str:
    """Run one case against a fresh server; one line of results."""
    make, copies = CASES[name]
    data = make()
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(model, Path(tmp))
        try:
            pid = srv.proc.pid
            post_image(srv.url, XRAY_NORMAL.read_bytes())
            base = proc_mb(pid, "VmRSS")
            replies = []

            def send():
                replies.append(post_image(srv.url, data, filename="upload"))

            threads = [threading.Thread(target=send) for _ in range(copies)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            secs = time.perf_counter() - t0
            time.sleep(1.0)
            peak, after = proc_mb(pid, "VmHWM"), proc_mb(pid, "VmRSS")
            alive = post_image(srv.url, XRAY_NORMAL.read_bytes()).status == 200
        finally:
            srv.stop()
    outcome = []
    for r in replies:
        try:
            body = r.json()
        except ValueError:
            body = {}
        err = body.get("error", {})
        what = err.get("code") or body.get("label", "")
        reasons = ",".join(x["code"] for x in err.get("reasons", []))
        outcome.append(f"{r.status} {what}" + (f" [{reasons}]" if reasons else ""))
    return (f"| {name} | {len(data) / 1024:.0f} KB | {'; '.join(sorted(set(outcome)))} | "
            f"{peak:.0f} | {base:.0f} -> {after:.0f} | {secs:.1f} s | {'yes' if alive else 'NO'} |")


def main(argv: list[str]) -> int:
    """Measure the named cases (default: all) and print a Markdown table."""
    model = Path(os.environ.get("PNEUMO_TEST_MODEL") or DEFAULT_MODEL)
    names = argv or list(CASES)
    print("| case | upload | answer | peak RSS MB | RSS MB before -> after | time | answers after |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        print(measure(model, name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
