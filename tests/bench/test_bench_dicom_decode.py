"""`pneumo bench`'s DICOM section: the X-ray in every transfer syntax, timed through the app."""

from pneumo.bench import results_report
from pneumo.bench.dicom_decode import SYNTAXES, dcmtk_available, run
from pneumo.bench.timing import Settings


def test_every_transfer_syntax_is_timed_and_reported():
    sec = run(Settings(warmup=0, repeat=2, min_repeat=1, max_seconds=0.2),
              size=(340, 240))
    assert sec["status"] == "ok"
    timed = {r["syntax"] for r in sec["rows"]}
    assert timed | set(sec["skipped"]) == set(SYNTAXES)
    if dcmtk_available():
        assert timed == set(SYNTAXES)
    for row in sec["rows"]:
        assert row["uid"] == SYNTAXES[row["syntax"]] and row["bytes"] > 0
        assert 0 < row["decode"]["min"] <= row["decode"]["p50"]
    md = results_report.markdown({"sections": {"dicom_decode": sec}, "machine": {}, "date": "",
                          "command": "pneumo bench"}, [])
    assert "DICOM decode per transfer syntax" in md and "1.2.840.10008.1.2.4.80" in md
