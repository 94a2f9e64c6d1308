"""Crash consistency (issue 30): a writer killed with SIGKILL at random points while it publishes
checkpoints and appends metrics, 30 times: 20 on a local directory, 10 on the loopback S3 server.
After each kill the run still has a loadable newest checkpoint and readable metrics; the next
writer takes the lease of the dead one, removes what it left half-written, resumes, and the run
ends with the same weights as one never interrupted.

The writer is the worker's own sequence without Ray (Lease.take, remove_leftovers,
load_latest_checkpoint, truncate_metrics, core.fit with a hook that appends metrics every step and
publishes a checkpoint every 5): Ray adds processes, not writes. Writers are forked from a
forkserver that has torch and ganflow imported, so each start costs milliseconds."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import JOBS

STEPS = 120
KILLS = {"local": 20, "s3": 10}  # 30 kill points; a bucket's writer starts ~3x slower (its client, its requests)
OVERRIDES = [f"train.steps={STEPS}", "train.log_every=1", "train.sample_every=100000",
             "train.batch_size=64", "model.hidden=32", "data.num_points=2000", "tracking.wandb.mode=disabled"]


def write(uri: str, endpoint: str, training=None, env=None, every: int = 5) -> None:
    """One writer: resume the run at `uri` from its newest checkpoint and train to the end
    (`training`, an Event, set as its first step begins: kills land among the writes)."""
    from ganflow.core.fit import fit
    from ganflow.job import batches_for, build_training, load_job
    from ganflow.run import checkpoint as ckpt
    from ganflow.run.lease import Lease
    from ganflow.run.run import Run
    from ganflow.store import S3Options

    os.environ.update(env or {})  # the forkserver started before the S3 fixture set its credentials
    torch.set_num_threads(1)
    cfg = load_job(JOBS / "ring.yaml", OVERRIDES + [f"train.checkpoint_every={every}"])
    run = Run.open(uri, S3Options(endpoint_url=endpoint or None))
    with Lease.take(run.store, run.uri):
        run.remove_leftovers()
        dataset, state = build_training(cfg, torch.device("cpu"))
        found = run.load_latest_checkpoint()
        if found is not None:
            state.load_state_dict(found[1])
        run.truncate_metrics(state.step)
        if training is not None:
            training.set()

        def hook(end):
            if end.log:
                run.append_metrics(end.metrics)
            if end.checkpoint:
                with tempfile.TemporaryDirectory() as tmp:
                    ckpt.write_checkpoint(state.state_dict(), cfg.to_dict(), cfg.hash(), Path(tmp))
                    run.publish_checkpoint(Path(tmp), end.step)

        fit(cfg, state, batches_for(cfg, dataset), hook)
        run.flush_metrics()


@pytest.fixture(scope="module")
def forkserver():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "ganflow.job", "ganflow.core.fit", "ganflow.run.run",
                                "ganflow.run.lease", "ganflow.store.s3"])  # torch.optim imports dynamo when first used
    return ctx


def start(ctx, uri: str, endpoint: str):
    training = ctx.Event()
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    every = 10 if endpoint else 5  # a bucket's checkpoint is 8 requests: fewer of them, the same kills
    proc = ctx.Process(target=write, args=(uri, endpoint, training, env, every))
    proc.start()
    return proc, training


def weights(uri: str, endpoint: str) -> dict:
    from ganflow.run.run import Run
    from ganflow.store import S3Options

    run = Run.open(uri, S3Options(endpoint_url=endpoint or None))
    found = run.load_latest_checkpoint()
    assert found is not None and found[2]["step"] == STEPS
    return {f"{part}.{k}": v for part in ("G", "D", "G_ema") for k, v in found[1][part].items()}


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path), "", KILLS["local"]
    endpoint, bucket = request.getfixturevalue("s3")
    return f"s3://{bucket}/runs", endpoint, KILLS["s3"]


@pytest.mark.slow  # ~9 s on a directory, ~12 s on the loopback S3 server (2 cores)
def test_a_writer_killed_at_random_points_resumes_to_the_weights_of_an_uninterrupted_run(location, forkserver):
    from ganflow.config import load
    from ganflow.run.run import Run
    from ganflow.store import S3Options

    root, endpoint, total = location
    options = S3Options(endpoint_url=endpoint or None)
    cfg = load(JOBS / "ring.yaml", OVERRIDES)
    whole, cut = (Run.create(f"{root}/{name}", cfg.name, options) for name in ("whole", "cut"))
    reference, _ = start(forkserver, whole.uri, endpoint)
    reference.join(120)
    assert reference.exitcode == 0
    theirs = weights(whole.uri, endpoint)
    rng = random.Random(30)
    kills, completed = 0, 0
    while kills < total or completed == 0:
        proc, training = start(forkserver, cut.uri, endpoint)
        if kills < total:
            assert training.wait(60), "the writer never started training"
            time.sleep(rng.uniform(0.0, 0.3 if endpoint else 0.2))
        if kills < total and proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            kills += 1
            run = Run(cut.store, options)  # read afresh, through the same client
            assert all(r["step"] >= 1 for r in run.read_metrics())  # readable, torn last line or not
            if run.checkpoints():
                assert run.load_latest_checkpoint() is not None, f"kill {kills}: the newest checkpoint does not load"
            continue
        proc.join(120)
        assert proc.exitcode == 0, f"the resume after kill {kills} failed"
        ours = weights(cut.uri, endpoint)  # resumed after kills to the end: the uninterrupted run's weights
        assert ours.keys() == theirs.keys()
        for name in theirs:
            assert torch.equal(ours[name], theirs[name]), name
        steps = [r["step"] for r in Run(cut.store, options).read_metrics()]
        assert steps == list(range(1, STEPS + 1)), "every step logged once, in order"
        completed += 1
        cut = Run.create(f"{root}/cut{completed}", cfg.name, options)
