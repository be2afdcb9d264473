"""The scaling measurement (pneumo/bench/scaling.py) on a few real X-rays: the same images for
every configuration, the time breakdown, the table. The local engine only (Ray's runs are in
the measurement itself and in tests/scale)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pyarrow")

from pneumo.app.updates.model_store import REFERENCE_DIR  # noqa: E402
from pneumo.bench import scaling  # noqa: E402


def test_picks_the_same_images_and_repeats_when_there_are_fewer():
    picked = scaling.pick_images([str(REFERENCE_DIR)], 10)
    assert len(picked) == 10 and len(set(picked)) == 6
    assert picked == scaling.pick_images([str(REFERENCE_DIR)], 10)
    assert len(set(scaling.pick_images([str(REFERENCE_DIR)], 3))) == 3
    with pytest.raises(FileNotFoundError):
        scaling.pick_images(["/nonexistent"], 3)


def test_measure_reports_images_per_second_and_where_the_time_goes(tmp_path):
    images = scaling.pick_images([str(REFERENCE_DIR)], 8)
    result = scaling.measure(images, configs=(("local", 1), ("local", 2)))
    assert [(r["engine"], r["workers"]) for r in result["runs"]] == [("local", 1), ("local", 2)]
    for run in result["runs"]:
        assert run["files"] == 8 and run["scored"] == 8 and run["images_per_s"] > 0
        ms = run["ms_per_file"]
        assert ms["total"] >= ms["decode"] + ms["checks"] + ms["model"] > 0
        assert run["max_probability_difference"] <= 1e-6
        assert len(run["load_average"]) == 2
    table = scaling.markdown(result)
    assert "| local | 2 |" in table and "engine overhead" in table
    assert json.loads(json.dumps(result)) == result
    assert scaling.missing_note(["/nonexistent"]) == "no images in /nonexistent"
