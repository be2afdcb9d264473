"""A small archive of real files for the archive-scoring tests: X-rays in several formats,
DICOM files the header rules refuse (lateral, another body part, an adult), non-X-rays, and
files that cannot be used. Each file's expected status and code are returned with it."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from apptools import (
    XRAY_NORMAL,
    XRAY_PNEUMONIA,
    all_fixture_xrays,
    dicom_bytes,
    document_png,
    noise_png,
    png16_bytes,
)

from pneumo.scale.rows import comparable


def dicom_with(source: Path = XRAY_NORMAL, **attributes: str) -> bytes:
    """A DICOM file of a fixture X-ray with these header attributes set."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(source)))
    for name, value in attributes.items():
        setattr(ds, name, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_archive(root: Path) -> dict[str, tuple[str, str | None]]:
    """Write the archive under root; {absolute path: (status, code)} of every file scored."""
    expected: dict[Path, tuple[str, str | None]] = {}
    for src in all_fixture_xrays():  # the six real fixture X-rays, in a nested tree
        dst = root / "site-a" / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        expected[dst] = ("scored", None)
    files = {
        "site-b/xray16.png": (png16_bytes(XRAY_PNEUMONIA), ("scored", None)),
        "site-b/child.dcm": (dicom_with(PatientAge="004Y", ViewPosition="PA",
                                        BodyPartExamined="CHEST"), ("scored", None)),
        "site-b/infant.dcm": (dicom_with(XRAY_PNEUMONIA, PatientAge="006M"), ("scored", None)),
        "site-b/adult.dcm": (dicom_with(PatientAge="045Y"),
                             ("refused", "patient_age_out_of_range")),
        "site-b/lateral.dcm": (dicom_with(ViewPosition="LL"), ("refused", "lateral_view")),
        "site-b/knee.dcm": (dicom_with(BodyPartExamined="KNEE"),
                            ("refused", "body_part_not_chest")),
        "site-c/noise.png": (noise_png(), ("refused", "noise_image")),
        "site-c/letter.png": (document_png(), ("refused", "document_or_graphic")),
        "site-c/broken.jpeg": (XRAY_NORMAL.read_bytes()[:400], ("failed", "undecodable_image")),
        "site-c/empty.jpeg": (b"", ("failed", "empty_file")),
    }
    for rel, (data, want) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[path] = want
    (root / "site-c" / ".hidden.jpeg").write_bytes(XRAY_NORMAL.read_bytes())  # never listed
    return {str(p.resolve()): v for p, v in expected.items()}


def read_csv(path: Path) -> list[dict]:
    """An archive CSV's rows (strings)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def same_rows(a: list[dict], b: list[dict], tolerance: float = 1e-6) -> list[str]:
    """What differs between two row lists (timings excluded; probabilities within tolerance)."""
    problems = []
    by_path_a = {r["path"]: comparable(r) for r in a}
    by_path_b = {r["path"]: comparable(r) for r in b}
    if by_path_a.keys() != by_path_b.keys():
        return [f"paths differ: {sorted(by_path_a.keys() ^ by_path_b.keys())}"]
    for path, ra in by_path_a.items():
        rb = by_path_b[path]
        for key in ra:
            va, vb = ra[key], rb[key]
            if key == "probability" and va not in (None, "") and vb not in (None, ""):
                if abs(float(va) - float(vb)) > tolerance:
                    problems.append(f"{path}: probability {va} != {vb}")
            elif va != vb:
                problems.append(f"{path}: {key} {va!r} != {vb!r}")
    return problems
