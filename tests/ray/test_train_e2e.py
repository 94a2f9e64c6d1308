"""End to end on a real local Ray: DDP equivalence, exact resume (also after a killed worker),
every shipped toy job through the CLI, and sampling from what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ganflow.run import checkpoint as ckpt
from ganflow import data, models
from ganflow.job import load_job, build_training
from ganflow.ray import driver
from ganflow.run.layout import RunLayout
from ganflow.run.run import Run
from ganflow.tracking.runfiles import offline_runs
from tests.conftest import JOBS, cli_here, trained_checkpoint, without_fid_weights
from tests.ray_head import train_worker_pids

pytestmark = pytest.mark.slow

SMALL_DIGITS = ["data.resolution=16", "model.nz=16", "model.ngf=8", "model.ndf=8", "train.batch_size=16"]


def final_state(run) -> dict:
    path = ckpt.latest_valid_checkpoint(Path(str(run)))
    state, _ = ckpt.load_checkpoint(path)
    return state


def assert_same_models(a: dict, b: dict, atol: float) -> None:
    for part in ("G", "D", "G_ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.allclose(a[part][k], b[part][k], atol=atol, rtol=0), f"{part}.{k} differs"


# Adam divides by sqrt(v): for near-zero gradients it turns float reduction-order noise into
# lr-sized differences, so the penalised cases compare under SGD, where updates are linear in
# the gradients DDP averages.
SGD = ["optim.g.name=sgd", "optim.d.name=sgd", "optim.g.lr=0.01", "optim.d.lr=0.01"]


@pytest.mark.parametrize(
    "job,overrides",
    [
        ("cdcgan_digits.yaml", SMALL_DIGITS + ["model.g_norm=none", "loss.r1_gamma=1.0", "data.name=prepared",
                                               "data.xflip=true", "data.classes=[1,3,5,7]"] + SGD),
    ],
    # through Ray Train (its DDP wrapping, its worker group) on a prepared set, mirrored; the maths of
    # every model and loss under DDP is tests/core/test_zoo_training.py's (two gloo processes, no Ray)
    ids=["cdcgan-sn-hinge-r1-prepared-xflip"],
)
def test_two_workers_on_half_batches_match_one_worker_on_the_full_batch(ray_cluster, prepared_digits, tmp_path, job,
                                                                         overrides):
    if "data.name=prepared" in overrides:
        overrides = overrides + [f"data.path={prepared_digits}"]
    common = overrides + ["train.steps=3", "train.checkpoint_every=3", f"storage.uri={tmp_path}",
                          "scaling.resources_per_worker.CPU=1"]
    one = driver.run(load_job(JOBS / job, common + ["scaling.num_workers=1"]))
    two = driver.run(load_job(JOBS / job, common + ["scaling.num_workers=2"]))
    a, b = final_state(one), final_state(two)
    assert a["step"] == b["step"] == 3
    assert_same_models(a, b, atol=1e-5)
    # and the step really moved the weights, so the comparison means something
    _, init = build_training(load_job(JOBS / job, common), torch.device("cpu"))
    moved = max((a["G"][k] - v).abs().max().item() for k, v in init.G.state_dict().items() if v.is_floating_point())
    assert moved > 1e-4


def test_resume_continues_to_the_same_weights_as_a_straight_run(cli, tmp_path):
    args = ["train", str(JOBS / "ring.yaml"), f"storage.uri={tmp_path}", "train.log_every=10", "train.checkpoint_every=30"]
    straight = cli(*args, "train.steps=60", check=True).stdout.strip().splitlines()[-1]
    first = cli(*args, "train.steps=30", check=True).stdout.strip().splitlines()[-1]
    resumed = cli("train", "--resume", first, "train.steps=60", check=True)
    assert resumed.stdout.strip().splitlines()[-1] == first
    assert "resuming from" in resumed.stdout + resumed.stderr
    a, b = final_state(Path(straight)), final_state(Path(first))
    assert a["step"] == b["step"] == 60
    assert_same_models(a, b, atol=0)
    for opt in ("opt_g", "opt_d"):
        for k, v in a[opt]["state"].items():
            for name, t in v.items():
                assert torch.equal(t, b[opt]["state"][k][name]), f"{opt}.{k}.{name}"
    steps = [r["step"] for r in Run.open(first).read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 60, "no repeated or missing log steps after resume"
    assert json.loads((Path(first) / "status.json").read_text())["status"] == "completed"


def _raylet_pid() -> int:
    """The raylet of the test session's Ray (the parent of its workers)."""
    import ray

    return int(ray.get(ray.remote(num_cpus=0)(lambda: os.environ["RAY_RAYLET_PID"]).remote()))


def test_killed_worker_is_restarted_by_ray_and_resumes_exactly(ray_cluster, tmp_path):
    overrides = SMALL_DIGITS + ["train.steps=120", "train.checkpoint_every=40", "train.log_every=20",
                                "train.max_failures=1", f"storage.uri={tmp_path}", f"tracking.wandb.dir={tmp_path / 'wb'}"]
    cfg = load_job(JOBS / "quickstart.yaml", overrides)
    raylet = _raylet_pid()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", driver.run(cfg)))
    runner.start()
    exp = tmp_path / cfg.name
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and killed is None:
        done = list(exp.glob("*/checkpoints/step_00000040/manifest.json"))
        pids = train_worker_pids(raylet)
        if done and pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=600)
    assert killed is not None, "never saw the first checkpoint"
    run_dir = result["run"]
    straight = driver.run(load_job(JOBS / "quickstart.yaml", overrides))
    a, b = final_state(run_dir), final_state(straight)
    steps = [r["step"] for r in run_dir.read_metrics()]
    attempts = offline_runs(tmp_path / "wb", run_id=run_dir.id)
    seen = f"metrics.jsonl {steps}, W&B attempts {[w.steps for w in attempts]}, checkpoints {run_dir.checkpoints()}"
    assert a["step"] == 120, seen
    # bit-equal in isolation; in the full suite on the AVX-512 development machine some runs end
    # apart (~1e-8 in two of four runs, and once a spectral-norm vector beyond 1e-6), float summation
    # noise whose source is not found yet (see issue 27's note). A lost or repeated batch moves the
    # weights by about Adam's step, the quickstart's lr 2e-4, a step: 4x this tolerance.
    assert_same_models(a, b, atol=5e-5)
    assert steps == [20, 40, 60, 80, 100, 120], seen
    # one W&B run id for the killed attempt and the restarted one, every step in it exactly once: the
    # restarted attempt logs the steps the killed one's W&B lacks (its last row is written only when the
    # next step arrives, so the row of the restored checkpoint's step comes from metrics.jsonl)
    assert len(attempts) == 2 and sum((w.steps for w in attempts), []) == steps, seen


def test_sigterm_to_a_worker_checkpoints_at_the_next_step_and_ray_resumes_from_it(ray_cluster, tmp_path):
    """train.checkpoint_on_preempt: a SIGTERM (a spot reclaim, `kubectl drain`) to one of two workers
    costs at most one step: every rank stops at the same step boundary with its checkpoint, Ray Train
    restarts the group, which resumes from it; the periodic checkpoints (every 1000) play no part."""
    overrides = SMALL_DIGITS + ["train.steps=80", "train.checkpoint_every=1000", "train.log_every=1",
                                "train.checkpoint_on_preempt=true", "train.max_failures=1", "scaling.num_workers=2",
                                "scaling.resources_per_worker.CPU=1", f"storage.uri={tmp_path}",
                                f"tracking.wandb.dir={tmp_path / 'wb'}"]
    cfg = load_job(JOBS / "quickstart.yaml", overrides)
    raylet = _raylet_pid()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", driver.run(cfg)))
    runner.start()
    deadline, signalled = time.time() + 300, None
    while time.time() < deadline and signalled is None:
        records = list((tmp_path / cfg.name).glob("*/metrics.jsonl"))
        pids = train_worker_pids(raylet)
        if records and len(records[0].read_text().splitlines()) >= 30 and len(pids) == 2:
            signalled = max(pids)
            os.kill(signalled, signal.SIGTERM)
        time.sleep(0.05)
    runner.join(timeout=600)
    assert signalled is not None, "never saw step 30"
    run_dir = result["run"]
    steps = [r["step"] for r in run_dir.read_metrics()]
    assert steps == list(range(1, 81)), "every step logged once: the redone ones replaced"
    checkpoints = sorted(RunLayout.step_of(key) for key in run_dir.checkpoints())
    assert len(checkpoints) == 2 and checkpoints[-1] == 80, checkpoints
    first, second = offline_runs(tmp_path / "wb", run_id=run_dir.id)  # the two attempts, in W&B's files
    preempted_at = checkpoints[0]
    assert 30 <= preempted_at and first.steps[-1] == preempted_at, (first.steps[-5:], checkpoints)
    assert second.steps[0] == preempted_at + 1, "the restart resumed from the preemption checkpoint: no step redone"
    assert ckpt.load_checkpoint(Path(str(run_dir)) / RunLayout.checkpoint(preempted_at))[0]["step"] == preempted_at


# grid.yaml differs from ring.yaml in its data only (test_config validates it, test_data checks its 25 modes)
TOY_JOBS = ["ring.yaml", "quickstart.yaml", "cdcgan_digits.yaml"]


@pytest.mark.parametrize("job", TOY_JOBS)
def test_shipped_job_trains_through_the_cli_and_samples(cli, tmp_path, job):
    proc = cli("train", str(JOBS / job), "train.steps=4", "train.log_every=2", "train.sample_every=2",
               "train.checkpoint_every=4", f"storage.uri={tmp_path / 'runs'}", check=True)
    run = Path(proc.stdout.strip().splitlines()[-1])
    cfg = load_job(JOBS / job)
    assert run.parent == (tmp_path / "runs" / cfg.name).resolve()
    assert load_job(run / "config.yaml", ["train.steps=8000"]).model == cfg.model
    records = Run.open(run).read_metrics()
    assert [r["step"] for r in records] == [2, 4]
    for key in ("loss/d", "loss/g", "throughput/imgs_per_s", "d/real_logit", "d/fake_logit", "grad_norm/g", "lr/g"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    assert (run / "checkpoints" / "step_00000004" / "manifest.json").is_file()

    out = tmp_path / "s.npz"
    cli_here("sample", str(run), "--num", "10", "--out", str(out), check=True)
    arrays = np.load(out)
    if data.spec(cfg.data.name).is_image:
        c = 1
        assert arrays["images"].shape == (10, c, cfg.data.resolution, cfg.data.resolution)
        assert arrays["images"].dtype == np.float32 and np.abs(arrays["images"]).max() <= 1
        assert ("labels" in arrays) == (models.generator_classes(cfg.model.name, 10) > 0)  # digits: 10 classes
    else:
        assert arrays["samples"].shape == (10, 2) and arrays["samples"].dtype == np.float32
    evaluated = cli_here("eval", str(run), "--num", "200", check=True)
    report = json.loads(evaluated.stdout)
    assert "[ganflow] generate and extract: 200/200 samples (100%)" in evaluated.stderr
    assert report["step"] == 4 and report["num_generated"] == 200
    if data.spec(cfg.data.name).is_image:  # digits: FID in the digits classifier's features (protocol named), KID, IS, PR, classes
        assert report["fid"] > 0 and report["kid"] > 0 and 1 <= report["is"] <= 10
        assert 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1 and 0 <= report["classes_covered_5pct"] <= 10
        assert report["protocol"].startswith("ganflow digits classifier")
        offline = cli("eval", str(run), "--metrics", "fid", "--extractor", "inception", env=without_fid_weights(tmp_path))
        assert offline.returncode == 2 and offline.stderr.startswith("ganflow: error: FID Inception weights not found")
        assert len(offline.stderr.strip().splitlines()) == 1 and not offline.stdout
    else:
        assert report["modes_total"] == (8 if cfg.data.name == "ring" else 25)
    bad = cli_here("eval", str(run), "--metrics", "fid2")
    assert bad.returncode == 2 and bad.stderr.strip() == "ganflow: error: --metrics: unknown fid2; choose from fid, kid, is, pr, classes, modes"
    png = tmp_path / "s.png"
    cli_here("sample", str(run / "checkpoints" / "step_00000004"), "--num", "16", "--out", str(png), check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if cfg.model.name == "cdcgan":
        cli_here("sample", str(run), "--num", "6", "--label", "3", "--out", str(out), check=True)
        assert np.load(out)["labels"].tolist() == [3] * 6
        bad = cli_here("sample", str(run), "--num", "6", "--label", "10", "--out", str(out))
        assert bad.returncode == 2 and "--label" in bad.stderr


def test_sample_is_deterministic_in_the_seed(tmp_path):
    run = str(trained_checkpoint(tmp_path, "ring.yaml", steps=1))
    draws = []
    for seed in ("1", "1", "2"):
        cli_here("sample", run, "--num", "5", "--seed", seed, "--out", str(tmp_path / "a.npz"), check=True)
        draws.append(np.load(tmp_path / "a.npz")["samples"])
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    bad = cli_here("sample", run, "--num", "5", "--label", "1", "--out", str(tmp_path / "a.npz"))
    assert bad.returncode == 2 and "not class-conditional" in bad.stderr


def test_resume_falls_back_past_a_corrupted_checkpoint(cli, tmp_path):
    wb = tmp_path / "wb"  # and a run with tracking disabled writes no W&B files
    proc = cli("train", str(JOBS / "ring.yaml"), "train.steps=4", "train.checkpoint_every=2", "train.log_every=2",
               f"storage.uri={tmp_path}", "tracking.wandb.mode=disabled", env={"WANDB_DIR": str(wb)}, check=True)
    assert not wb.exists() and "W&B" not in proc.stderr
    run = proc.stdout.split()[-1]
    target = Path(run) / "checkpoints" / "step_00000004" / "G.safetensors"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    target.write_bytes(bytes(blob))
    sample = cli_here("sample", str(Path(run) / "checkpoints" / "step_00000004"), "--num", "2", "--out", str(tmp_path / "x.npz"))
    assert sample.returncode == 2 and "sha256 mismatch" in sample.stderr
    resumed = cli("train", "--resume", run, "train.steps=6", check=True)
    text = resumed.stdout + resumed.stderr
    assert "sha256 mismatch" in text and "step_00000004" in text
    assert "resuming from" in text and "step_00000002" in text
    assert final_state(Path(run))["step"] == 6


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("train", "--resume", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a run (no config.yaml" in proc.stderr


def test_more_workers_than_the_local_machine_can_place_is_a_clear_error_not_a_hang(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("train", str(JOBS / "quickstart.yaml"), "scaling.num_workers=2", "scaling.resources_per_worker.CPU=4096",
                   f"storage.uri={tmp_path}", env={"RAY_ADDRESS": None}, timeout=120)
    assert proc.returncode == 2
    assert "scaling.resources_per_worker.CPU: 2 workers x 4096 CPU need 8192, the local Ray has" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_evaluation_during_training_on_two_workers_matches_ganflow_eval(cli, tmp_path):
    proc = cli("train", str(JOBS / "quickstart.yaml"), *SMALL_DIGITS, "train.steps=6", "train.log_every=3",
               "train.checkpoint_every=3", "eval.every=3", "eval.num_samples=301", "scaling.num_workers=2",
               "scaling.resources_per_worker.CPU=0.5",
               f"storage.uri={tmp_path}", check=True)
    run = Path(proc.stdout.strip().splitlines()[-1])
    logged = [r for r in Run.open(run).read_metrics() if "eval/fid" in r]
    assert [r["step"] for r in logged] == [3, 6]
    on_demand = json.loads(cli_here("eval", str(run), "--num", "301", check=True).stdout)
    assert on_demand["step"] == 6 and on_demand["fid"] > 0
    # each worker scored its share of the same 301 samples; generating 150 at a time instead of 301 moves
    # the convolutions' float sums by ~1e-7, other samples would move the distance by percents
    for key in ("fid", "kid", "is", "precision", "recall", "min_class_share"):
        assert logged[-1][f"eval/{key}"] == pytest.approx(on_demand[key], rel=1e-4)


def test_a_run_on_the_in_process_ray_is_quiet_about_rays_internals(tmp_path):
    """The README's front door: no RAY_ADDRESS, Ray starts in-process and ends with the command;
    Ray Train's placement-group cleaner, which polls the State API, stays silent."""
    from tests.conftest import run_cli

    trace = tmp_path / "trace.jsonl"  # and its start-up marks (benchmarks/startup.py) come in order
    proc = run_cli("train", str(JOBS / "ring.yaml"), "train.steps=40", "train.log_every=20", "train.checkpoint_every=40",
                   f"storage.uri={tmp_path}", env={"RAY_ADDRESS": None, "GANFLOW_TRACE": str(trace)}, timeout=300,
                   check=True)
    assert Path(proc.stdout.strip().splitlines()[-1]).parent.parent == tmp_path
    assert "State API may be temporarily unavailable" not in proc.stderr
    marks = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [m["phase"] for m in marks] == ["cli", "imports", "config", "preflight", "ray", "fit", "worker", "setup",
                                           "first_batch", "first_step", "checkpoint", "trained", "worker_done",
                                           "fit_returned"]
    assert [m["t"] for m in marks] == sorted(m["t"] for m in marks)
    assert marks[0]["pid"] != marks[6]["pid"] and marks[6]["process_start"] <= marks[6]["t"]  # the worker's own


def test_a_driver_joining_a_running_cluster_has_its_workers_ask_that_clusters_state_api(ray_cluster, tmp_path):
    """Ray Train's placement-group cleaner asks the State API whether a run's controller lives. Left
    to itself the State API asks the Ray that `ray start` started last on the machine, or one since
    gone (a 10 s timeout then ended every run); a "no such actor" from another Ray makes the cleaner
    remove a live run's workers."""
    from tests.ray_head import start_head, stop_head

    head, _ = start_head(tmp_path / "other-head.log", num_cpus=1)  # the machine's "current" Ray now
    try:
        code = ("import ray\nfrom ganflow.ray.cluster import ensure_ray\nensure_ray()\n"
                "@ray.remote(num_cpus=0)\nclass Probe:\n    def state(self):\n"
                "        from ray.util.state import get_actor\n"
                "        found = get_actor(ray.get_runtime_context().get_actor_id(), timeout=30)\n"
                "        return found.state if found else 'no such actor'\n"
                "print(ray.get(Probe.remote().state.remote()))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RAY_ADDRESS": ray_cluster}, cwd=Path(__file__).parents[2])
    finally:
        stop_head(head)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ALIVE", proc.stdout


def test_workers_of_the_in_process_ray_use_as_many_torch_threads_as_their_cpus_at_normal_priority():
    """Ray sets a worker's OMP_NUM_THREADS from its CPUs when its first task starts; a setup hook
    that imported torch before that left every worker on every core (2.5x slower side by side).
    Ray's default nice 15 put training behind every other busy process (Ray's own among them)."""
    code = ("import os, ray, torch\nfrom ganflow.ray.cluster import ensure_ray\nensure_ray()\n"
            "probe = ray.remote(num_cpus=1)(lambda: (__import__('torch').get_num_threads(), os.getpriority(os.PRIO_PROCESS, 0)))\n"
            "print(ray.get([probe.remote(), probe.remote()]))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "RAY_ADDRESS": ""}, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[(1, 0), (1, 0)]", proc.stdout
