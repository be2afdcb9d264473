"""Archive scoring without Ray: inputs and manifests, one row per file through the app's own
pipeline (refusals and failures included), the DICOM age rule, resume (path, size, mtime,
model; --verify adds the file's sha256), de-duplication, pseudonymised output, and the local
engine's process pool through the real `pneumo predict` command. Real files, real ONNX
Runtime."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scaletools import dicom_with, make_archive, read_csv

pytest.importorskip("pyarrow")

from pneumo.app.pipeline.files import predict_file  # noqa: E402
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel  # noqa: E402
from pneumo.app.pipeline.predictor import Predictor  # noqa: E402
from pneumo.cli import main  # noqa: E402
from pneumo.scale.manifest import list_inputs, read_bytes, stat_items  # noqa: E402
from pneumo.scale.output import ArchiveStore  # noqa: E402
from pneumo.scale.rows import (  # noqa: E402
    ROW_FIELDS,
    Pseudonymiser,
    comparable,
    pipeline_version,
    row_key,
)
from pneumo.scale.score import Scorer, patient_age_years  # noqa: E402

GUARD = Path(__file__).resolve().parents[1] / "runtime_guard.py"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("archive")
    return root, make_archive(root)


@pytest.fixture(scope="module")
def scorer(test_model_path) -> Scorer:
    return Scorer(str(test_model_path))


def test_folders_and_manifests_list_each_file_once(archive, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, expected = archive
    listed = list_inputs([str(root)])
    assert sorted(listed) == sorted(expected) and not any(".hidden" in p for p in listed)
    manifest = tmp_path / "m.csv"  # relative paths are taken from the manifest's folder
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_ref", "path"])
        for p in listed[:3]:
            w.writerow(["x", os.path.relpath(p, tmp_path)])
    pq.write_table(pa.table({"path": listed[2:5]}), tmp_path / "m.parquet")
    both = list_inputs([listed[0]], [str(manifest), str(tmp_path / "m.parquet")])
    assert both == listed[:5]  # in order, each once
    (tmp_path / "bad.csv").write_text("file\nx.jpeg\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        list_inputs([], [str(tmp_path / "bad.csv")])
    uri = list_inputs([f"file://{root / 'site-a'}"])  # pyarrow's file systems
    assert len(uri) == 6 and all(u.startswith("file://") for u in uri)
    assert read_bytes(uri[0]) == Path(uri[0][len("file://"):]).read_bytes()
    item = stat_items([uri[0]])[0]
    assert item["size"] == Path(uri[0][7:]).stat().st_size and item["mtime_ns"] > 0
    assert stat_items([str(tmp_path / "gone.jpeg")])[0]["size"] == -1


def test_every_file_is_one_row_through_the_apps_pipeline(archive, scorer, test_model_path):
    root, expected = archive
    rows = {r["path"]: r for r in scorer.score_many(stat_items(sorted(expected)))}
    assert {p: (r["status"], r["code"]) for p, r in rows.items()} == expected
    predictor = Predictor(OnnxModel(test_model_path))
    model = predictor.model
    for path, row in rows.items():
        assert set(row) == set(ROW_FIELDS)
        assert (row["model_name"], row["model_version"], row["model_sha256"],
                row["pipeline_version"]) == (model.name, model.version, model.sha256,
                                             pipeline_version())
        if row["code"] == "patient_age_out_of_range":
            continue  # the archive's own rule, before the app's pipeline
        app = predict_file(predictor, Path(path), "balanced")  # the app's answer, directly
        if row["status"] == "scored":
            assert (row["probability"], row["label"], row["outcome"], row["threshold"]) == (
                app["probability"], app["label"], app["outcome"], app["threshold"])
            assert row["threshold"] == pytest.approx(model.thresholds["balanced"], abs=1e-6)
            assert row["file_sha256"] == app["sha256"] and row["ms_total"] > 0
        else:
            assert row["reasons"].split(";")[0] == row["code"]
            assert app["error"]["code"] in ("not_a_chest_xray", row["code"])
    assert rows[str(root / "site-c" / "empty.jpeg")]["file_sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_the_age_rule_reads_patientage_only_from_dicom_headers():
    cases = {"004Y": 4.0, "017Y": 17.0, "018Y": 18.0, "006M": 0.5, "010W": 70 / 365.25,
             "003D": 3 / 365.25}
    for text, years in cases.items():
        assert patient_age_years(dicom_with(PatientAge=text)) == pytest.approx(years)
    assert patient_age_years(dicom_with()) is None  # no PatientAge: no rule
    with pytest.warns(UserWarning, match="Invalid value for VR AS"):
        assert patient_age_years(dicom_with(PatientAge="abc")) is None
    assert patient_age_years(Path(DEFAULT_MODEL).read_bytes()[:2000]) is None  # not DICOM


def _predict(*args: str) -> dict:
    assert main(["predict", *args]) == 0
    out = Path(args[args.index("--csv") + 1]).with_suffix(".archive")
    return json.loads((out / "summary.json").read_text())


def test_local_engine_scores_once_then_skips_and_verify_sees_changed_bytes(archive, tmp_path):
    root, expected = archive
    work = tmp_path / "tree"
    import shutil

    shutil.copytree(root, work)
    out_csv = tmp_path / "rows.csv"
    first = _predict(str(work), "--engine", "local", "--workers", "2", "--csv", str(out_csv))
    assert first["files_this_run"] == len(expected) and first["workers"] == 2
    assert first["status"] == {"scored": 9, "refused": 5, "failed": 2}
    assert first["refused"]["patient_age_out_of_range"] == 1
    rows = read_csv(out_csv)
    assert len(rows) == len(expected) and list(rows[0]) == list(ROW_FIELDS)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)

    again = _predict(str(work), "--engine", "local", "--csv", str(out_csv))
    assert again["files_this_run"] == 0 and again["skipped_already_scored"] == len(expected)
    assert [comparable(r) for r in read_csv(out_csv)] == [comparable(r) for r in rows]

    # new bytes, same size and mtime: only --verify notices
    target = work / "site-a" / "NORMAL" / "IM-0115-0001.jpeg"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # inside the JPEG's last entropy-coded bytes: still decodes
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _predict(str(work), "--csv", str(out_csv), "--engine", "local")[
        "files_this_run"] == 0
    verified = _predict(str(work), "--csv", str(out_csv), "--engine", "local", "--verify")
    assert verified["files_this_run"] == 1 and verified["skipped_already_scored"] == 15
    target.touch()  # a new mtime: rescored without --verify too
    assert _predict(str(work), "--csv", str(out_csv), "--engine", "local")[
        "files_this_run"] == 1
    final = read_csv(out_csv)
    assert len(final) == len(expected)  # one row per file: the newest
    changed = next(r for r in final if r["path"] == str(target.resolve()))
    assert changed["mtime_ns"] == str(target.stat().st_mtime_ns)


def test_rows_are_written_once_per_key(tmp_path, scorer, archive):
    _, expected = archive
    rows = scorer.score_many(stat_items(sorted(expected)[:3]))
    store = ArchiveStore(tmp_path / "out")
    assert [store.add(r) for r in rows + rows[:2]] == [True] * 3 + [False] * 2  # Ray retried
    store.flush()
    again = ArchiveStore(tmp_path / "out")
    done = again.done(rows[0]["model_sha256"], pipeline_version(), verify=False)
    assert done == {row_key(r) for r in rows}
    assert again.add(dict(rows[0], scored_at="later")) is False  # also across runs
    assert len(again.rows()) == 3
    assert again.done("another-model", pipeline_version(), verify=False) == set()


def test_pseudonymised_output_holds_no_path_and_resumes(archive, tmp_path):
    root, expected = archive
    key = tmp_path / "keys" / "archive.key"
    out_csv = tmp_path / "pseudo.csv"
    args = [str(root), "--engine", "local", "--workers", "1", "--csv", str(out_csv),
            "--pseudonymise", str(key)]
    assert _predict(*args)["files_this_run"] == len(expected)
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    text = out_csv.read_text(encoding="utf-8-sig")
    shards = b"".join(p.read_bytes() for p in out_csv.with_suffix(".archive").rglob("*.parquet"))
    for secret in (str(root), "site-a", "IM-0115", "Test^Fixture", "person1"):
        assert secret not in text and secret.encode() not in shards, secret
    pseud = Pseudonymiser(key.read_bytes())
    paths = {r["path"] for r in read_csv(out_csv)}
    assert paths == {pseud.path(p) for p in expected}
    assert _predict(*args)["skipped_already_scored"] == len(expected)  # the same pseudonyms


def test_without_archive_options_predict_is_the_clinic_batch_mode(capsys):
    from apptools import XRAY_PNEUMONIA

    assert main(["predict", str(XRAY_PNEUMONIA)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["status"] == "ok" and line["label"] == "PNEUMONIA"
    assert main(["predict"]) == 2


def test_archive_mode_on_the_base_install_says_what_to_install(tmp_path):
    from apptools import XRAY_NORMAL

    res = subprocess.run([sys.executable, str(GUARD), "predict", str(XRAY_NORMAL), "--engine",
                          "ray", "--csv", str(tmp_path / "x.csv")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "needs the scale packages (pyarrow, ray not installed)" in res.stderr
    assert "pip install '.[scale]'" in res.stderr and "Traceback" not in res.stderr


def test_the_newest_run_wins_even_within_one_second(tmp_path, scorer, archive):
    _, expected = archive
    row = scorer.score_many(stat_items(sorted(expected)[:1]))[0]
    for n in range(20):  # 20 runs in well under a second, each rescoring the file
        store = ArchiveStore(tmp_path / "out")
        store.done(row["model_sha256"], row["pipeline_version"], verify=True)
        assert store.add(dict(row, mtime_ns=n, scored_at=f"run {n}"))
        store.flush()
    current = ArchiveStore(tmp_path / "out").current(row["model_sha256"],
                                                     row["pipeline_version"]).to_pylist()
    assert [(r["mtime_ns"], r["scored_at"]) for r in current] == [(19, "run 19")]
