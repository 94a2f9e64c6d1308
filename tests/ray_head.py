"""A Ray head started the way a team starts one (`ray start --head`), on loopback, in its own
process group so that it can be killed whole; for tests/test_jobs.py and benchmarks/."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(log: Path, num_cpus: int = 2, timeout_s: float = 120) -> Tuple[subprocess.Popen, str]:
    """(process, dashboard address); the process's `gcs_address` is the head's GCS. The head gets no AWS or RAY_* settings of its own, and this
    Python's bin/ first on PATH (the cluster's `python`); every port is a free one, so it runs
    beside any other Ray on the machine."""
    from ganflow.ray.jobs import client

    dashboard, gcs = free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_")) and k != "WANDB_API_KEY"}
    if "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in os.environ:  # the tests' faster Ray Train (see conftest)
        env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    cmd = [os.path.join(bin_dir, "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--num-cpus={num_cpus}", "--disable-usage-stats"]
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait()
