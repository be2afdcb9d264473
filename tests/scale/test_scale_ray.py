"""The Ray engine on a Ray of this machine alone (no --address): it listens on 127.0.0.1 only,
and its rows are the local engine's (probabilities within 1e-6, timings excluded), refusals
and failures included. Real Ray, real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from scaletools import make_archive, read_csv, same_rows

pytest.importorskip("ray", reason="the [scale] extra (ray) is not installed")
pytest.importorskip("pyarrow")

from pneumo.scale.job import Job, run_job  # noqa: E402
from pneumo.scale.ray_engine import connect  # noqa: E402

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def listening_of_children() -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening socket of this process's children."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            out.extend((child.name(), c.laddr.ip, c.laddr.port)
                       for c in child.net_connections("inet") if c.status == psutil.CONN_LISTEN)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_rows_and_stays_on_loopback(tmp_path, monkeypatch,
                                                                       test_model_path):
    import ray._private.ray_constants as ray_constants

    for name in ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.delenv(name, raising=False)  # connect() sets them: undone after the test
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    expected = make_archive(tmp_path / "archive")
    jobs = {engine: Job(paths=[str(tmp_path / "archive")], out=tmp_path / engine,
                        model_path=str(test_model_path), engine=engine, workers=2,
                        extra={} if engine == "local" else {"shutdown": False})
            for engine in ("local", "ray")}
    local = run_job(jobs["local"])
    ray = connect(None, num_cpus=2)
    try:
        sockets = listening_of_children()
        summary = run_job(jobs["ray"])
    finally:
        ray.shutdown()
    assert {name for name, _, _ in sockets} >= {"gcs_server", "raylet"}, sockets
    assert [s for s in sockets if s[1] not in LOOPBACK] == [], sockets
    assert summary["workers"] == 2 and summary["files_this_run"] == len(expected)
    assert summary["status"] == local["status"] and summary["refused"] == local["refused"]
    rows = {engine: read_csv(Path(jobs[engine].out) / "predictions.csv") for engine in jobs}
    assert len(rows["ray"]) == len(expected)
    assert same_rows(rows["ray"], rows["local"]) == []
