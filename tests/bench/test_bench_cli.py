"""`pneumo bench --quick` end to end: results.json structure, results.md, plots."""

import json

import pytest

from pneumo.cli import main

SECTIONS = ("model_latency", "roofline", "preprocessing", "dicom_decode", "http", "request_path",
            "scaling", "executable")


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out), "--exe", str(tmp_path / "no-exe")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == 1 and res["quick"] is True and res["date"]
    assert {"cpu_model", "usable_cores", "cpu_flags", "versions", "os"} <= set(res["machine"])
    assert set(SECTIONS) <= set(res["sections"])
    for name in SECTIONS:
        assert res["sections"][name]["status"] in ("ok", "skipped"), res["sections"][name]

    lat = res["sections"]["model_latency"]
    assert lat["status"] == "ok" and lat["batches"] == [1, 8] and lat["threads"] == [1]
    for row in lat["rows"]:
        assert row["batch"] in (1, 8)
        st = row["stats"]
        assert {"n", "warmup", "p50", "p95", "p99", "min", "max"} <= set(st)
        assert st["min"] <= st["p50"] <= st["p95"] <= st["p99"] <= st["max"]
        assert st["n"] == len(st["samples_ms"]) >= 3
    runtimes = {(r["model"], r["runtime"]) for r in lat["rows"]}
    if res["tensorflow"]:
        assert {("model-fp32", "onnxruntime"), ("model-int8", "onnxruntime"),
                ("seed-fp32", "onnxruntime"), ("model-keras", "keras.predict"),
                ("model-keras", "keras.tf_function")} <= runtimes
        names = [s["name"] for s in lat["speedups"]]
        assert any("int8" in n and "predict" in n for n in names)
        assert all(s["speedup"] > 0 for s in lat["speedups"])

    roof = res["sections"]["roofline"]
    assert roof["status"] == "ok"
    assert all(m["macs_per_image"] > 0 for m in roof["models"].values())
    assert roof["rows"] and all(r["efficiency"] > 0 for r in roof["rows"])
    assert {"fp32|t1", "int8|t1"} <= set(roof["attainable"]["peak"])

    pre = res["sections"]["preprocessing"]
    assert {(r["input"], r["variant"]) for r in pre["rows"]} == {
        ("jpeg_8bit", "draft"), ("jpeg_8bit", "no_draft"), ("png_16bit", "default"),
        ("dicom_16bit", "default")}

    web = res["sections"]["http"]
    if web["status"] == "ok":
        assert [lv["clients"] for lv in web["levels"]] == [1, 4, 8]
        for lv in web["levels"]:
            assert lv["requests"] == lv["ok"] + lv["errors"] and lv["ok"] > 0
            assert lv["rss_before"] and lv["rss_after"]
            assert lv["duration_s"] < 30
    assert res["sections"]["executable"]["status"] == "skipped"

    md = (out / "results.md").read_text()
    for title in ("# Latency benchmark results", "## Model latency", "## Roofline",
                  "## Preprocessing", "## HTTP end to end", "## Executable"):
        assert title in md
    assert res["machine"]["cpu_model"] in md
    assert list(out.glob("*.png"))
