"""A real two-node Ray cluster on loopback (tests/scale/loopback_cluster.py, in its own network
and PID namespaces): Ray listens on 127.0.0.1 only; `pneumo predict --engine ray --address`
gives the local engine's rows; a rerun skips every file; the second node's raylet killed once
mid-job and the job still scores every file exactly once; both nodes stopped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scaletools import make_archive, read_csv, same_rows

pytest.importorskip("ray", reason="the [scale] extra (ray) is not installed")
pytest.importorskip("pyarrow")

from pneumo.cli import main  # noqa: E402

SCRIPT = Path(__file__).with_name("loopback_cluster.py")
NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
PORT = 46379  # free in a new network namespace


def namespaces_available() -> bool:
    """True when this user may make network and PID namespaces (root, or user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*NAMESPACES, "true"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
def test_two_node_loopback_cluster_scores_once_skips_and_survives_a_node(tmp_path):
    if not namespaces_available():
        pytest.skip("needs network and PID namespaces (unshare --net --pid): outside one, Ray "
                    "rewrites 127.0.0.1 to this machine's own address and listens there")
    from tinydata import xray_variants

    images = tmp_path / "archive"
    expected = make_archive(images)
    failover = tmp_path / "failover"
    failover.mkdir()
    for i, (data, label) in enumerate(xray_variants(100, seed=4)):
        (failover / f"{label}-{i:04d}.jpeg").write_bytes(data)
    local_csv = tmp_path / "local.csv"
    assert main(["predict", str(images), "--engine", "local", "--csv", str(local_csv)]) == 0

    out = tmp_path / "cluster"
    out.mkdir()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"images": str(images), "failover_images": str(failover),
                                "out": str(out), "port": PORT}))
    res = subprocess.run([*NAMESPACES, sys.executable, str(SCRIPT), str(plan),
                          str(tmp_path / "result.json")], capture_output=True, text=True,
                         timeout=540)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["head"]["rc"] == 0 and r["worker"]["rc"] == 0, (r["head"], r["worker"])
    assert r["status"].count(" node_") == 2, r["status"]  # two live nodes

    # Ray listens on loopback only (every listening socket of every process started here)
    assert any(s["port"] == PORT and s["name"] == "gcs_server" for s in r["listening"])
    assert {s["name"] for s in r["listening"]} >= {"gcs_server", "raylet"}
    assert [s for s in r["listening"] if s["ip"] not in LOOPBACK] == [], r["listening"]

    # a job through --address: every file once, the local engine's rows
    assert r["first"]["rc"] == 0, r["first"]["stderr"]
    cluster_rows = read_csv(out / "first.csv")
    assert sorted(row["path"] for row in cluster_rows) == sorted(expected)
    assert same_rows(cluster_rows, read_csv(local_csv)) == []
    assert {row["path"]: (row["status"], row["code"] or None) for row in cluster_rows} == expected

    # the same command again: nothing left to score
    assert r["again"]["rc"] == 0, r["again"]["stderr"]
    again = json.loads((out / "first.archive" / "summary.json").read_text())
    assert again["files_this_run"] == 0 and again["skipped_already_scored"] == len(expected)

    # the second node's raylet killed once mid-job: the job finishes, each file scored once
    f = r["failover"]
    assert f["rc"] == 0, f["log_tail"]
    assert f["killed_at_s"] is not None and not f["raylet_alive_after"], f
    assert r["failover_rows_at_kill"] < 200, r["failover_rows_at_kill"]
    rows = read_csv(out / "failover.csv")
    assert len(rows) == 200 and len({row["path"] for row in rows}) == 200
    assert {Path(row["path"]).name for row in rows} == {p.name for p in failover.iterdir()}
    assert {row["status"] for row in rows} == {"scored"}
    shards = json.loads((out / "failover.archive" / "summary.json").read_text())
    assert shards["files_this_run"] == 200 and shards["all_runs"]["files"] == 200

    # both nodes stopped: nothing of the cluster is left
    assert r["stopped"] and r["left_running"] == []
