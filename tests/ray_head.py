"""A Ray cluster started the way a team starts one (`ray start --head`, then `ray start --address`
on each further node), on loopback, each node in its own process group so that it can be killed
whole; for the Jobs API and multi-node tests and benchmarks/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple


def free_ports(n: int) -> list:
    """`n` distinct free ports: all bound at once, so that the kernel cannot hand one out twice
    (closing a socket and binding the next can return the same port), and on every address: a port
    free on 127.0.0.1 may be another Ray's on the machine's own address, and gRPC servers share a
    port (SO_REUSEPORT), so a second GCS there takes the first one's connections."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def _node_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_")) and k != "WANDB_API_KEY"}
    if "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in os.environ:  # the tests' faster Ray Train (see conftest)
        env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return {**env, **(extra or {})}


_PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
               "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def _ports(extra: int = 0) -> Tuple[list, list]:
    """The node's port flags, each a distinct free port, and `extra` more distinct ones."""
    ports = free_ports(len(_PORT_FLAGS) + extra)
    return [f"--{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports)], ports[len(_PORT_FLAGS):]


def start_node(gcs_address: str, log: Path, num_cpus: int = 1, resources: Optional[Dict[str, float]] = None,
               env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Another node of the head's cluster: a raylet of its own on this machine (`ray start
    --address`), with `num_cpus` CPUs and `resources`; returns once the cluster counts it."""
    marker = f"gf-node-{os.urandom(4).hex()}"  # tells this node from an earlier one on the same ports
    cmd = [os.path.join(str(Path(sys.executable).parent), "ray"), "start", f"--address={gcs_address}", "--block",
           "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", *_ports()[0], "--disable-usage-stats",
           f"--resources={json.dumps({**(resources or {}), marker: 1})}"]
    with open(log, "w") as out:
        node = subprocess.Popen(cmd, env=_node_env(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while not _alive(gcs_address, marker):
        if time.time() > deadline or node.poll() is not None:
            stop_head(node)
            raise RuntimeError(f"the Ray node did not come up:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.5)
    return node


def _alive(gcs_address: str, marker: str) -> bool:
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=gcs_address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    except Exception:
        return False
    return any(marker in (n.resources_total or {}) for n in nodes)


def raylet_pid(node: subprocess.Popen) -> Optional[int]:
    """The raylet process under a `ray start --block` process (its child)."""
    for pid in _children(node.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                return pid
        except OSError:
            continue
    return None


def train_worker_pids(raylet: int) -> list:
    """The Ray Train workers under this raylet only (another Ray or node on the machine may train too)."""
    out = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, out.split()):
        try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == raylet:
            pids.append(pid)
    return pids


def _children(pid: int) -> list:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    found = []
    for child in map(int, out.split()):
        found += [child, *_children(child)]
    return found


def start_head(log: Path, num_cpus: int = 2, timeout_s: float = 120, resources: Optional[Dict[str, float]] = None,
               env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.Popen, str]:
    """(process, dashboard address); the process's `gcs_address` is the head's GCS. The head gets no AWS or RAY_* settings of its own, and this
    Python's bin/ first on PATH (the cluster's `python`); every port is a free one, so it runs
    beside any other Ray on the machine."""
    from ganflow.ray.jobs import client

    flags, (dashboard, gcs, client_port) = _ports(extra=3)
    cmd = [os.path.join(str(Path(sys.executable).parent), "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--ray-client-server-port={client_port}", *flags, f"--num-cpus={num_cpus}", "--disable-usage-stats"]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=_node_env(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    head.gcs_address = f"127.0.0.1:{gcs}"  # what `ray.init` and RAY_ADDRESS take to join it
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + timeout_s
    while True:
        try:
            client(address).list_jobs()
            return head, address
        except Exception:
            if time.time() > deadline or head.poll() is not None:
                stop_head(head)
                raise RuntimeError(f"the Ray head did not come up:\n{Path(log).read_text()[-3000:]}")
            time.sleep(0.5)


def stop_head(head: subprocess.Popen) -> None:
    """The node goes away whole: every process under it (Ray's workers may sit in sessions of
    their own) and its process group. A node already stopped is left alone: its pid, and the
    process group named after it, may belong to another process by now (pids wrap around in a
    long suite; the in-process Ray's GCS was once killed that way)."""
    if head.returncode is not None:
        return
    for pid in _children(head.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait()
