"""`pneumo bench --architectures`: the students' cost next to the shipped model, one run."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tf2onnx")

from pneumo.cli import main  # noqa: E402


@pytest.mark.slow
def test_the_architecture_table_measures_the_pair_and_each_candidate(tmp_path, capsys):
    assert main(["bench", "--architectures", "--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "architectures.json").read_text())
    rows = {(r["model"], r["precision"]): r for r in res["rows"]}
    assert set(rows) == {("shipped pair", "int8"), ("stem4-96", "fp32"), ("stem4-96", "int8"),
                         ("mobile-96", "fp32"), ("mobile-96", "int8")}
    pair = rows["shipped pair", "int8"]
    assert pair["macs"] > 1e9 and pair["speedup_vs_pair_1t"] == 1.0
    for r in res["rows"]:
        assert r["ms_1t"] > 0 and r["ms_2t"] > 0 and r["file_bytes"] > 0
    assert rows["stem4-96", "int8"]["file_bytes"] < rows["stem4-96", "fp32"]["file_bytes"] / 2
    assert (tmp_path / "architectures.png").stat().st_size > 5000
    table = (tmp_path / "architectures.md").read_text()
    assert "| shipped pair | int8 | 224 |" in table and table in capsys.readouterr().out
