"""A real two-node Ray cluster on loopback, and `pneumo predict --engine ray` jobs through it.

    unshare --net --pid --fork --mount-proc python loopback_cluster.py PLAN.json RESULT.json

Run inside fresh network and PID namespaces (tests/scale/test_ray_cluster.py does): the only
interface is ``lo``, so nothing can leave the machine and Ray, finding no route out, takes
127.0.0.1 as every node's address (outside one, ``ray start --node-ip-address 127.0.0.1``
is rewritten to the machine's own address: Ray wants nodes that other machines can reach).
Every process started here is in the PID namespace: the nodes are stopped by their process ids
in a ``finally``, and whatever is left ends with the namespace.

PLAN.json: {"images": DIR, "failover_images": DIR, "out": DIR, "port": P}; RESULT.json gets
what the test asserts on (listening sockets, the jobs' exit codes, stderr tails, times).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Bring ``lo`` up (a new network namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


TOKEN: dict[str, str] = {}


def env() -> dict:
    """The environment of every Ray and pneumo process here: no usage statistics; token
    authentication with this cluster's own token (never the user's ~/.ray/auth_token)."""
    inherited = {k: v for k, v in os.environ.items()
                 if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # a single-machine Ray's switch
    return {**inherited, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **TOKEN}


def make_token(folder: Path) -> None:
    """A random token for this cluster, used by its nodes and by every job."""
    path = folder / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    TOKEN.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(path))


def ray_cli() -> str:
    """The `ray` command of this interpreter's environment."""
    return str(Path(sys.executable).with_name("ray"))


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """A command to completion, output captured."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())


def reap() -> None:
    """Collect the exit status of finished children (this is the namespace's first process:
    the nodes' daemons are its children once `ray start` has returned)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def others() -> set[int]:
    """Live process ids in this PID namespace besides this one (all of them started here)."""
    reap()
    out = set()
    for p in psutil.process_iter(["status"]):
        if p.pid not in (os.getpid(), 1) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.add(p.pid)
    return out


def listening() -> list[dict]:
    """Every listening TCP socket of every process here: pid, name, address."""
    out = []
    for p in psutil.process_iter(["pid", "name"]):
        try:
            conns = p.net_connections("inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.extend({"pid": p.pid, "name": p.info["name"], "ip": c.laddr.ip, "port": c.laddr.port}
                   for c in conns if c.status == psutil.CONN_LISTEN)
    return out


def predict(address: str, images: str, csv_path: Path, *extra: str) -> list[str]:
    """The `pneumo predict --engine ray --address ...` command line."""
    return [sys.executable, "-m", "pneumo.cli", "predict", "--engine", "ray", "--address",
            address, images, "--csv", str(csv_path), *extra]


def stop(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL after 10 s, to these processes (ours: this namespace's)."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.send_signal(signal.SIGTERM)
            procs.append(p)
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and others() & pids:
        time.sleep(0.2)
    for pid in others() & pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    time.sleep(0.5)
    reap()


def failover(address: str, plan: dict, worker_raylet: int, result: dict) -> None:
    """A job during which the second node's raylet is killed once, after its first rows."""
    out = Path(plan["out"])
    log_path = out / "failover.log"
    t0 = time.monotonic()
    with log_path.open("w") as log:
        job = subprocess.Popen(predict(address, plan["failover_images"], out / "failover.csv",
                                       "--batch-size", "2", "--workers", "2"),
                               stdout=log, stderr=subprocess.STDOUT, text=True, env=env())
        killed_at = None
        while job.poll() is None and time.monotonic() - t0 < 300:
            text = log_path.read_text()
            if killed_at is None and "pneumo.scale.job: scored " in text:
                os.kill(worker_raylet, signal.SIGKILL)
                killed_at = time.monotonic() - t0
                result["failover_rows_at_kill"] = int(re.findall(r"scored (\d+)/", text)[-1])
            time.sleep(0.05)
        if job.poll() is None:
            job.kill()
        job.wait()
    result["failover"] = {"rc": job.returncode, "killed_at_s": killed_at,
                          "seconds": round(time.monotonic() - t0, 1),
                          "raylet_alive_after": worker_raylet in others(),
                          "log_tail": log_path.read_text()[-6000:]}


def main(plan_path: str, result_path: str) -> int:
    """Start the cluster, run the jobs, stop the cluster; the facts go to RESULT.json."""
    plan = json.loads(Path(plan_path).read_text())
    out = Path(plan["out"])
    result: dict = {"pid": os.getpid()}
    loopback_up()
    port = int(plan["port"])
    address = f"127.0.0.1:{port}"
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's sockets are there
    make_token(out)
    try:
        head = run([ray_cli(), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
                    str(port), "--num-cpus", "1", "--include-dashboard=false",
                    "--disable-usage-stats", "--temp-dir", str(temp)])
        result["head"] = {"rc": head.returncode, "tail": (head.stdout + head.stderr)[-3000:]}
        head_pids = others()
        worker = run([ray_cli(), "start", "--address", address, "--node-ip-address",
                      "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"])
        result["worker"] = {"rc": worker.returncode,
                            "tail": (worker.stdout + worker.stderr)[-3000:]}
        worker_raylets = [p for p in others() - head_pids
                          if psutil.Process(p).name() == "raylet"]
        result["worker_raylets"] = worker_raylets
        time.sleep(2)  # the agents open their ports after start returns
        result["listening"] = listening()
        for _ in range(30):  # a loaded machine may take several seconds to list the 2nd node
            status = run([ray_cli(), "status", "--address", address])
            if status.stdout.count(" node_") >= 2:
                break
            time.sleep(2)
        result["status"] = status.stdout[-2000:]
        t0 = time.monotonic()
        first = run(predict(address, plan["images"], out / "first.csv"), timeout=300)
        result["first"] = {"rc": first.returncode, "stdout": first.stdout,
                           "stderr": first.stderr[-6000:],
                           "seconds": round(time.monotonic() - t0, 1)}
        again = run(predict(address, plan["images"], out / "first.csv"), timeout=300)
        result["again"] = {"rc": again.returncode, "stdout": again.stdout,
                           "stderr": again.stderr[-3000:]}
        if len(worker_raylets) == 1:
            failover(address, plan, worker_raylets[0], result)
    finally:
        pids = others()
        stop(pids)
        result["stopped"] = sorted(pids)
        result["left_running"] = sorted(others())
        shutil.rmtree(temp, ignore_errors=True)
        Path(result_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
