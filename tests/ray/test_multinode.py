"""Multi-node and elastic training on a real two-node Ray cluster on this machine: a head and a
second raylet (`ray start --address`), one CPU each, so two 1-CPU workers must span both nodes.
Runs go through the CLI against it (RAY_ADDRESS), as on a team's cluster; a node is lost by
killing its raylet and every process under it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ganflow.run import checkpoint as ckpt
from ganflow.run.run import Run
from tests.conftest import JOBS, run_cli
from tests.ray.test_train_e2e import SGD, SMALL_DIGITS, final_state
from tests.ray_head import raylet_pid, start_head, start_node, stop_head

pytestmark = pytest.mark.slow

# Both nodes and every driver agree on no token authentication (a token file in ~/.ray would
# otherwise switch it on for some and not others); the GCS declares a lost node dead within ~2 s
# (Ray's default: 5 missed checks, 3 s apart); Ray Train gives up waiting for the size it had
# after 5 s (60 s by default) and starts with the nodes that are left.
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "500",
               "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}
DRIVER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "5"}

# GAN training is chaotic: float reduction order (1 worker on B, or 2 on B/2) grows to 1e-2 within a few
# hundred steps of the quickstart's settings. Without BatchNorm and spectral norm, with a smooth loss and
# small SGD steps it stays below 2e-6 over 600 steps and 6e-5 over 1500 (measured), so a lost or repeated
# batch shows.
COMMON = SMALL_DIGITS + SGD + ["optim.g.lr=0.001", "optim.d.lr=0.001", "model.g_norm=none", "model.d_norm=none",
                               "model.spectral_norm=false", "loss.name=nonsaturating", "scaling.resources_per_worker.CPU=1",
                               "train.log_every=10", "train.checkpoint_every=50", "train.sample_every=100000"]


class TwoNodes:
    def __init__(self, root: Path):
        self.root = root
        self.head, _ = start_head(root / "head.log", num_cpus=1, env=CLUSTER_ENV)
        self.address = self.head.gcs_address
        self.node = None
        self.start_second()

    def start_second(self) -> None:
        self.node = start_node(self.address, self.root / f"node-{time.time():.0f}.log", num_cpus=1, env=CLUSTER_ENV)

    def lose_second(self) -> None:
        """The machine goes away: its raylet first (by its process id), then everything it ran."""
        os.kill(raylet_pid(self.node), signal.SIGKILL)
        stop_head(self.node)
        self.node = None

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, env={"RAY_ADDRESS": self.address, **DRIVER_ENV}, **kw)

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        env = {**os.environ, "RAY_ADDRESS": self.address, **DRIVER_ENV}
        return subprocess.Popen([sys.executable, "-m", "ganflow.cli", *args], env=env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, text=True)

    def close(self) -> None:
        if self.node is not None:
            stop_head(self.node)
        stop_head(self.head)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    cluster = TwoNodes(tmp_path_factory.mktemp("two-nodes"))
    yield cluster
    cluster.close()


TOLERANCE = 1e-4  # see COMMON


def assert_close(a: dict, b: dict) -> None:
    worst = max((a[p][k] - b[p][k]).abs().max().item() for p in ("G", "D", "G_ema") for k in a[p])
    assert worst <= TOLERANCE, f"weights differ by up to {worst:.3g}"


def _state(run: Path, step: int) -> dict:
    return ckpt.load_checkpoint(run / "checkpoints" / f"step_{step:08d}")[0]


@pytest.fixture(scope="module")
def straight() -> dict:
    """The reference: one worker, 600 steps, uninterrupted: `core.fit` in this process (what a Ray
    worker runs, without Ray's start-up), its state at every checkpoint step."""
    from ganflow.core.fit import fit
    from ganflow.job import batches_for, build_training, load_job

    cfg = load_job(JOBS / "quickstart.yaml", COMMON + ["train.steps=600", "tracking.wandb.mode=disabled"])
    dataset, state = build_training(cfg, torch.device("cpu"))
    states: dict = {}

    def snapshot(end):
        if end.checkpoint:
            kept = {k: v for k, v in state.state_dict().items() if k in ("G", "D", "G_ema")}
            states[end.step] = {part: {k: t.clone() for k, t in sd.items()} for part, sd in kept.items()}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray worker
    try:
        fit(cfg, state, batches_for(cfg, dataset), snapshot)
    finally:
        torch.set_num_threads(threads)
    return states


def _wait_for(predicate, what: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"never saw {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def _records(exp: Path) -> list:
    runs = sorted(p for p in exp.iterdir() if (p / "metrics.jsonl").is_file()) if exp.is_dir() else []
    if not runs:
        return []
    lines = (runs[-1] / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def _lose_the_second_node_after_step_60(cluster: TwoNodes, proc: subprocess.Popen, log: Path, exp: Path,
                                        meanwhile) -> Path:
    """Kill the second node once the run logged step 60, call `meanwhile(exp)`, start the node again,
    and wait for the run to succeed; its run directory. The cluster has both nodes again after it."""
    try:
        _wait_for(lambda: any(r["step"] >= 60 for r in _records(exp)), "step 60", proc, log)
        cluster.lose_second()
        meanwhile(exp)
        cluster.start_second()
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        if cluster.node is None:
            cluster.start_second()
    return Path(sorted(exp.iterdir())[-1])


def test_two_workers_span_both_nodes_wait_for_a_lost_one_and_a_resume_on_one_worker_continues_the_same_batches(
        two_nodes, straight, tmp_path):
    """A fixed-size run (2 workers, one a node) waits for a lost node and resumes when it returns;
    then `--resume RUN scaling.num_workers=1` continues it on one worker, the same global batches."""
    log = tmp_path / "train.log"
    proc = two_nodes.popen("train", str(JOBS / "quickstart.yaml"), *COMMON, f"storage.uri={tmp_path}", "train.steps=200",
                           "scaling.num_workers=2", "scaling.placement_strategy=STRICT_SPREAD", "train.max_failures=5",
                           log=log)
    run = _lose_the_second_node_after_step_60(two_nodes, proc, log, tmp_path / "quickstart", lambda exp: time.sleep(3))
    records = Run.open(str(run)).read_metrics()
    seen = f"{[(r['step'], r['scaling/workers'], r['scaling/nodes']) for r in records]}\n{log.read_text()[-3000:]}"
    assert [r["step"] for r in records] == list(range(10, 201, 10)), seen
    assert {(r["scaling/workers"], r["scaling/nodes"]) for r in records} == {(2, 2)}, "two workers on two nodes, " + seen
    for step in range(50, 201, 50):  # every checkpoint loads
        assert _state(run, step)["step"] == step
    assert_close(_state(run, 200), straight[200])

    resumed = two_nodes.cli("train", "--resume", str(run), "train.steps=300", "scaling.num_workers=1", check=True)
    assert "step 200: training on 1 worker(s) across 1 node(s) (was 2)" in resumed.stdout + resumed.stderr
    records = Run.open(str(run)).read_metrics()
    assert [r["step"] for r in records] == list(range(10, 301, 10))
    assert [r["scaling/workers"] for r in records] == [2] * 20 + [1] * 10
    a = final_state(run)
    assert a["step"] == 300
    assert_close(a, straight[300])
    moved = max((a["G"][k] - v).abs().max().item() for k, v in _state(run, 200)["G"].items() if v.is_floating_point())
    assert moved > 1e-4, "the resumed steps moved the weights, so the comparison means something"


def test_an_elastic_run_goes_on_without_a_lost_node_and_grows_back_when_it_returns(two_nodes, straight, tmp_path):
    """The group restarts from the newest checkpoint with the one worker left and grows back when the
    node returns, from the newest checkpoint again. Ray Train's view of the cluster is refreshed every
    20 s, so shrinking and growing back take up to half a minute each: batches computed an image at a
    time (gradient accumulation, the same maths) make the steps slow enough that the run is still
    going when the node is back."""
    steps = 600
    log = tmp_path / "train.log"
    proc = two_nodes.popen("train", str(JOBS / "quickstart.yaml"), *COMMON, f"storage.uri={tmp_path}", f"train.steps={steps}",
                           "scaling.num_workers=[1,2]", "train.max_failures=5", "scaling.resize_interval_s=1",
                           "train.batch_per_worker=1", log=log)
    # before the node returns, a checkpoint made by one worker: growing back restarts from the newest checkpoint
    run = _lose_the_second_node_after_step_60(two_nodes, proc, log, tmp_path / "quickstart", lambda exp: _wait_for(
        lambda: any(r.get("scaling/workers") == 1 and r["step"] % 50 == 0 for r in _records(exp)),
        "a checkpoint on one worker", proc, log))
    records = Run.open(str(run)).read_metrics()
    sizes = [r["scaling/workers"] for r in records]
    seen = f"workers by log step {sizes}\n{log.read_text()[-3000:]}"
    assert [r["step"] for r in records] == list(range(10, steps + 1, 10)), seen
    shrunk = sizes.index(1)
    assert set(sizes[:shrunk]) == {2} and sizes[-1] == 2 and 1 in sizes[shrunk:], seen
    output = log.read_text()
    assert "training on 1 worker(s) across 1 node(s) (was 2)" in output and "across 2 node(s) (was 1)" in output
    for step in range(50, steps + 1, 50):  # every checkpoint loads
        assert _state(run, step)["step"] == step
    assert_close(final_state(run), straight[steps])
