"""W&B end to end: `ganflow train` on the real local Ray with wandb offline, read back from the
run files W&B itself wrote; resume into the same W&B run; sampling a `wandb:` artifact; a W&B
that is disabled or broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ganflow.run.run import Run
from ganflow.tracking.runfiles import offline_runs
from tests.conftest import JOBS, S3_ENV, cli_here

pytestmark = pytest.mark.slow

RING = [str(JOBS / "ring.yaml"), "train.log_every=10", "train.sample_every=20", "train.checkpoint_every=20",
        "eval.every=20", "eval.num_samples=400"]
DRIVER_SECRET = "driver-wandb-key-" + "Zr4" * 8
NAMING = {"loss/d", "loss/g", "d/real_logit", "d/fake_logit", "grad_norm/d", "grad_norm/g", "penalty/r1",
          "throughput/imgs_per_s", "lr/g", "lr/d"}


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_training_run_is_a_wandb_run_and_resumes_into_it(cli, tmp_path):
    wb = tmp_path / "wb"
    env = {"WANDB_DIR": str(wb), "WANDB_API_KEY": DRIVER_SECRET}  # a key, but offline by config
    args = ["train", *RING, f"storage.uri={tmp_path / 'runs'}", "tracking.wandb.mode=offline",
            "tracking.wandb.tags=[ring,ci]", "tracking.wandb.group=team-a",
            f"tracking.wandb.notes='pasted by mistake: {DRIVER_SECRET}'"]  # a secret in a config value
    first = cli(*args, "train.steps=40", env=env, check=True)
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    assert f"W&B offline: {wb}/wandb/offline-run-*-{run_dir.name}" in first.stderr

    (wrun,) = offline_runs(wb)
    assert (wrun.run_id, wrun.project, wrun.group, wrun.job_type, wrun.tags) == (run_dir.name, "ganflow", "team-a", "train", ["ring", "ci"])
    assert wrun.config["optim"]["g"]["lr"] == 1e-3 and wrun.config["train"]["steps"] == 40
    assert wrun.config["tracking"]["wandb"]["notes"] == "pasted by mistake: <redacted>"
    records = Run.open(run_dir).read_metrics()
    assert wrun.steps == [r["step"] for r in records] == [10, 20, 30, 40]
    assert NAMING <= set(wrun.history[0]), set(wrun.history[0])
    for row, rec in zip(wrun.history, records):  # the same numbers as metrics.jsonl
        assert row["loss/d"] == pytest.approx(rec["loss/d"]) and row["throughput/imgs_per_s"] == pytest.approx(rec["throughput/imgs_per_s"])
    evals = {row["_step"]: row["eval/high_quality"] for row in wrun.history if "eval/high_quality" in row}
    assert sorted(evals) == [20, 40] and all(row["eval/num_generated"] == 400 for row in wrun.history if "eval/modes" in row)
    images = {row["_step"]: row["samples.path"] for row in wrun.history if "samples.path" in row}
    assert sorted(images) == [20, 40] and all((wrun.path / "files" / p).is_file() for p in images.values())
    assert wrun.summary["final_step"] == 40 and wrun.summary["run_uri"] == str(run_dir)
    best_step = wrun.summary["best/step"]
    assert wrun.summary["best/high_quality"] == max(evals.values()) == evals[best_step]

    ckpts = [a for a in wrun.artifacts if a.type == "checkpoint"]
    assert [a.metadata["step"] for a in ckpts] == [20, 40]
    for a in ckpts:
        where = run_dir / "checkpoints" / f"step_{a.metadata['step']:08d}"
        assert a.references["manifest.json"] == (where / "manifest.json").as_uri()
        assert a.metadata["uri"] == str(where)
    assert [a.metadata["step"] for a in ckpts if "best" in a.aliases] == [best_step]
    (gen,) = [a for a in wrun.artifacts if a.type == "model"]
    assert gen.name == f"generator-{run_dir.name}" and gen.metadata["step"] == 40

    # the artifact names the checkpoint: sampling through it equals sampling the run
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    cli_here("sample", f"wandb:ganflow/generator-{run_dir.name}:latest", "--num", "64", "--out", str(a), env=env, check=True)
    cli_here("sample", str(run_dir), "--num", "64", "--out", str(b), check=True)
    assert np.array_equal(np.load(a)["samples"], np.load(b)["samples"])

    resumed = cli("train", "--resume", str(run_dir), "train.steps=60", env=env, check=True)
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    runs = offline_runs(wb)
    assert [r.run_id for r in runs] == [run_dir.name] * 2 and runs[1].resumed
    assert runs[0].steps + runs[1].steps == [10, 20, 30, 40, 50, 60], "one W&B run, no step logged twice"
    assert [a.metadata["step"] for a in runs[1].artifacts if a.type == "checkpoint"] == [60]
    dry = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", *(str(r.path) for r in runs)],
                         capture_output=True, text=True, timeout=120)  # what `wandb sync` would upload, offline
    assert dry.returncode == 0 and "Would sync 2 run(s)" in dry.stdout + dry.stderr, dry.stdout + dry.stderr

    # no credential in any file W&B wrote, nor in the run: the cluster's S3 secret, the driver's key
    for root in (wb, run_dir):
        blob = all_bytes(root)
        for secret in (S3_ENV["AWS_SECRET_ACCESS_KEY"], DRIVER_SECRET):
            assert secret.encode() not in blob, f"{secret} leaked under {root}"


def test_broken_wandb_fails_before_anything_is_written_or_degrades_as_configured(cli, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    runs = tmp_path / "runs"
    args = ["train", str(JOBS / "ring.yaml"), "train.steps=4", f"storage.uri={runs}", f"tracking.wandb.dir={blocker}/wb"]
    failed = cli(*args)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("ganflow: error: tracking.wandb.dir: cannot write W&B files")
    assert not runs.exists(), "nothing written when W&B is broken at start"

    degraded = cli(*args, "tracking.wandb.on_error=disable", check=True)
    assert "W&B tracking disabled: tracking.wandb.dir" in degraded.stderr
    run_dir = Path(degraded.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
