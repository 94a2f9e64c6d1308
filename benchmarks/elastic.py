"""Multi-node figures on a two-node Ray cluster on this machine (a head and a second raylet, one
CPU each; tests/ray_head.py starts them as `ray start` would):

1. throughput of 2 workers across the 2 nodes against 2 workers on one node (a one-node cluster of
   2 CPUs): what crossing the node boundary costs on loopback;
2. a lost node under elastic scaling (`scaling.num_workers=[1,2]`): seconds from the loss to the
   first training step after recovery, and steps redone, without and with
   `train.checkpoint_on_preempt` (a spot reclaim: SIGTERM to the node's worker, then the node goes
   2 s later, or once the preemption checkpoint is written). Median of `--trials`.

    python benchmarks/elastic.py [--trials 3]

Ray Train's view of the cluster is refreshed every 20 s and it waits
RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s by default; 5 s here) for the size it had before
shrinking, so the recovery time is mostly Ray's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.ray_head import raylet_pid, start_head, start_node, stop_head, train_worker_pids  # noqa: E402

ENV = {"RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3"}
DRIVER = {"RAY_AUTH_MODE": "disabled", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "5", "WANDB_MODE": "disabled"}
JOB = ["data.resolution=16", "model.nz=16", "model.ngf=8", "model.ndf=8", "train.batch_size=16",
       "scaling.resources_per_worker.CPU=1", "train.sample_every=1000000"]


def train(address: str, out: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": address, **DRIVER}
    return subprocess.Popen([sys.executable, "-m", "ganflow.cli", "train", str(ROOT / "jobs/quickstart.yaml"), *JOB,
                             f"storage.uri={out}", *overrides], env=env, stdout=open(out / "train.log", "w"),
                            stderr=subprocess.STDOUT)


def records(out: Path) -> list:
    files = list(out.glob("quickstart/*/metrics.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.endswith("}")]


def wait(predicate, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the run ended or stalled; see its train.log")
        time.sleep(0.02)


def throughput(address: str, root: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=root))
    proc = train(address, out, "train.steps=1500", "train.log_every=100", "train.checkpoint_every=100000",
                 "scaling.num_workers=2", "scaling.placement_strategy=SPREAD")
    if proc.wait() != 0:
        raise RuntimeError(f"training failed: {out / 'train.log'}")
    rates = [r["throughput/imgs_per_s"] for r in records(out)][2:]  # the first windows include start-up
    return statistics.median(rates)


def train_worker_on(node: subprocess.Popen) -> int:
    """The Ray Train worker under this node's raylet."""
    pids = train_worker_pids(raylet_pid(node))
    if not pids:
        raise RuntimeError("no Ray Train worker on the second node")
    return pids[0]


def lose_node(root: Path, preempt: bool, trial: int) -> tuple:
    """A fresh two-node cluster per trial: a stopped run's reservation outlives it in Ray Train's
    autoscaling coordinator for a while."""
    head, _ = start_head(root / f"head-{time.time():.0f}.log", num_cpus=1, env=ENV)
    try:
        return _lose_node(head.gcs_address, root, preempt, trial)
    finally:
        stop_head(head)


def _lose_node(address: str, root: Path, preempt: bool, trial: int) -> tuple:
    node = start_node(address, root / f"node-{time.time():.0f}.log", num_cpus=1, env=ENV)
    out = Path(tempfile.mkdtemp(dir=root))
    proc = train(address, out, "train.steps=100000", "train.log_every=1", "train.checkpoint_every=100",
                 "scaling.num_workers=[1,2]", "train.max_failures=-1", f"train.checkpoint_on_preempt={str(preempt).lower()}")
    at = 150 + 23 * trial  # a point between two checkpoints
    wait(lambda: any(r["step"] >= at for r in records(out)), proc)
    lost = time.time()
    if preempt:
        os.kill(train_worker_on(node), signal.SIGTERM)
        checkpoints = out / "quickstart"
        wait(lambda: any(int(c.name[5:]) >= at for c in checkpoints.glob("*/checkpoints/step_*")
                         if (c / "manifest.json").is_file()) or time.time() > lost + 2, proc)
    os.kill(raylet_pid(node), signal.SIGKILL)
    stop_head(node)
    reached = [0]  # the last step the lost group logged (the new one truncates what it redoes)

    def recovered():
        seen = records(out)
        reached[0] = max([reached[0]] + [r["step"] for r in seen if r.get("scaling/workers") == 2])
        return next((r for r in seen if r.get("scaling/workers") == 1), None)

    first = wait(recovered, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    return first["time"] - lost, reached[0] - (first["step"] - 1)


def throughputs(root: Path) -> None:
    head, _ = start_head(root / "one.log", num_cpus=2, env=ENV)
    try:
        one_node = throughput(head.gcs_address, root)
    finally:
        stop_head(head)
    head, _ = start_head(root / "head.log", num_cpus=1, env=ENV)
    try:
        node = start_node(head.gcs_address, root / "node.log", num_cpus=1, env=ENV)
        two_nodes = throughput(head.gcs_address, root)
        stop_head(node)
    finally:
        stop_head(head)
    print(f"2 workers, 1 node : {one_node:8.1f} img/s\n2 workers, 2 nodes: {two_nodes:8.1f} img/s"
          f"  x{two_nodes / one_node:.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ganflow-elastic-"))
    if not args.skip_throughput:
        throughputs(root)
    for preempt in (False, True):
        runs = [lose_node(root, preempt, t) for t in range(args.trials)]
        print(f"node lost, checkpoint_on_preempt={str(preempt).lower():5s}: "
              f"{statistics.median(r[0] for r in runs):5.1f} s to the first step after recovery, "
              f"{statistics.median(r[1] for r in runs):4.0f} steps redone (median of {args.trials}: "
              f"{[(round(s, 1), n) for s, n in runs]})", flush=True)


if __name__ == "__main__":
    main()
