"""`ganflow sweep`: spec validation before anything starts, and real Ray Tune sweeps of the ring
job (each in its own process with an in-process Ray, beside the session's Ray, as a user's second
Ray on one machine would be; each trial its own TorchTrainer): ASHA, PBT, a killed driver resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ganflow.job import load_job
from ganflow.run.checkpoint import read_manifest
from ganflow.run.run import Run
from ganflow.tracking.runfiles import offline_runs
from tests.conftest import JOBS, cli_here, run_cli, without_fid_weights

RING_SWEEP = JOBS / "sweep_ring.yaml"
FAST = ["train.log_every=100", "train.sample_every=100000", "eval.num_samples=500"]


def write_spec(tmp_path: Path, **fields) -> Path:
    spec = {"name": "s", "job": str(JOBS / "ring.yaml"), "space": {"optim.g.lr": "loguniform(1e-4, 1e-3)"}, **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("fields,expected", [
    ({"space": {"optim.g.lrate": "loguniform(1e-4, 1e-3)"}}, "space.optim.g.lrate: loguniform(0.0001, 0.001) can give 0.0001, which the job refuses: unknown key"),
    ({"space": {"optim.g.lr": "loguniform(0, 1e-3)"}}, "space.optim.g.lr: loguniform needs 0 < low < high, got low=0"),
    ({"space": {"optim.g.lr": "uniform(-1e-3, 1e-3)"}}, "space.optim.g.lr: uniform(-0.001, 0.001) can give -0.001, which the job refuses: must be > 0"),
    ({"space": {"optim.g.lr": "lognormal(1e-4, 1e-3)"}}, "space.optim.g.lr: unknown distribution 'lognormal'; choose from uniform"),
    ({"space": {"optim.g.lr": "1e-4"}}, "space.optim.g.lr: 0.0001 is not a distribution"),
    ({"space": {"loss.name": "choice([hinge, wgan)"}}, "space.loss.name: the arguments of choice(...) must be numbers or a [list]"),
    ({"space": {"loss.name": "choice([hinge, wasserstein])"}}, "space.loss.name: choice can give 'wasserstein', which the job refuses"),
    ({"space": {"model.hidden": "choice([64, 128])"}, "scheduler": "pbt"}, "space: PBT perturbs learning rates while trials train"),
    ({"scheduler": "pbt", "search": "optuna"}, "search: PBT samples its population itself"),
    ({"scheduler": "pbt", "num_samples": 4, "max_concurrent_trials": 2}, "max_concurrent_trials: PBT's population trains together"),
    ({"scheduler": "pbt", "perturbation_steps": 150, "overrides": ["eval.every=100", "train.checkpoint_every=100"]},
     "perturbation_steps: 150 is not a multiple of eval.every=100"),
    ({"scheduler": "hyperband"}, "scheduler: 'hyperband'; choose one of fifo, asha, pbt"),
    ({"metric": "fid"}, "metric: 'fid' is not evaluated by this job's eval.metrics (modes)"),
    ({"budget": 3}, "budget: unknown sweep field"),
])
def test_a_bad_sweep_spec_is_one_line_naming_the_field_exit_2_before_ray(tmp_path, fields, expected):
    proc = cli_here("sweep", str(write_spec(tmp_path, **fields)), f"storage.uri={tmp_path / 'runs'}",
                    env={"RAY_ADDRESS": None})
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"ganflow: error: {expected}"), line
    assert not (tmp_path / "runs").exists()


def test_a_sweep_without_the_fid_weights_it_needs_fails_once_up_front(tmp_path):
    spec = write_spec(tmp_path, job=str(JOBS / "quickstart.yaml"), overrides=["eval.extractor=inception"],
                      metric="fid")
    proc = run_cli("sweep", str(spec), f"storage.uri={tmp_path / 'runs'}",
                   env={"RAY_ADDRESS": None, **without_fid_weights(tmp_path)}, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ganflow: error: FID Inception weights not found")
    assert not (tmp_path / "runs" / "sweeps").exists()


def test_resume_names_a_sweep_folder(tmp_path):
    proc = cli_here("sweep", "--resume", str(tmp_path / "nowhere"), env={"RAY_ADDRESS": None})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"ganflow: error: --resume {tmp_path / 'nowhere'}: no sweep.yaml there")


def test_a_pbt_trial_lists_every_run_it_trained_even_when_a_later_fork_repeats_its_steps(tmp_path):
    from ray.tune import Result

    from ganflow.sweep.results import _trial_rows
    from ganflow.sweep.spec import load_spec
    from ganflow.sweep.trial import TrialLog

    spec = load_spec(write_ring_sweep(tmp_path, scheduler="pbt"))
    log = TrialLog(str(tmp_path), "a_00000")
    # run1 evaluates 100 and 200; PBT forks run2 from the other trial's step-100 checkpoint (run2
    # evaluates 200, and the other trial forks from it); then run3 from step 100 again repeats 200
    for run, fork, step, score in [("r/run1", None, 100, 0.1), ("r/run1", None, 200, 0.2),
                                   ("r/run2", "r/oth/checkpoints/step_100", 200, 0.5),
                                   ("r/run3", "r/oth/checkpoints/step_100", 200, 0.3),
                                   ("r/run3", "r/oth/checkpoints/step_100", 300, 0.4),
                                   ("r/run3", "r/oth/checkpoints/step_100", 300, 0.35)]:  # run3 resumed
        log.append({"step": step, spec.eval_key: score, "checkpoint": f"{run}/checkpoints/step_{step}",
                    "run": run, "forked_from": fork, "params": {}})
    # after a PBT exploit Tune's last metrics for a trial can be its donor's, trial id included
    result = Result(metrics={"trial_id": "b_00001"}, checkpoint=None, error=None,
                    path=str(tmp_path / "run_trial_a_00000_0_optim_g_lr=0.001"))
    (row,) = _trial_rows(spec, [result], str(tmp_path), None)
    assert row["runs"] == ["r/run1", "r/run2", "r/run3"]
    assert row["forked_from"] == [None, "r/oth/checkpoints/step_100", "r/oth/checkpoints/step_100"]
    assert (row["best_high_quality"], row["best_checkpoint"]) == (0.5, "r/run2/checkpoints/step_200")
    assert (row["last_step"], row["last_high_quality"]) == (300, 0.35)


def sweep_rows(location: Path):
    return [json.loads(line) for line in (location / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_an_asha_sweep_of_ring_stops_the_worst_trials_early_and_its_best_yaml_trains(tmp_path):
    """The shipped ring sweep with its space pinned so ASHA's rungs have a known answer: two
    learning rates that learn, then (two at a time) two that cannot move G, ranked by the modes
    covered at ASHA's rung at step 300 (before it every trial covers none and high_quality is ~0
    for all, so which random draw ASHA stopped hung on float noise: reordering R1's maths flipped it)."""
    spec = yaml.safe_load(RING_SWEEP.read_text())
    spec.update(job=str(JOBS / spec["job"]), num_samples=1, metric="modes", grace_steps=300, space={
        "optim.g.lr": "grid([2e-3, 1e-3, 1e-7, 2e-7])", "optim.d.lr": "choice([1e-3])", "model.hidden": "choice([64])"})
    (tmp_path / "sweep_ring.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    runs = tmp_path / "runs"
    proc = run_cli("sweep", str(tmp_path / "sweep_ring.yaml"), f"storage.uri={runs}", "train.steps=400", "train.checkpoint_every=100", *FAST,
                   env={"RAY_ADDRESS": None}, timeout=900, check=True)
    best_yaml = Path(proc.stdout.strip().splitlines()[-1])
    assert best_yaml.name == "best.yaml" and best_yaml.parent.parent == runs / "sweeps"
    rows = sweep_rows(best_yaml.parent)
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4 and not any(r["error"] for r in rows)
    assert sum(r["last_step"] for r in rows) < 4 * 400  # ASHA stopped some trials at a rung
    assert max(r["last_step"] for r in rows) == 400  # and let the best run to the end
    best = json.loads((best_yaml.parent / "best.json").read_text())
    assert best["value"] == max(r["best_modes"] for r in rows)
    assert Path(best["checkpoint"], "manifest.json").is_file()
    node = yaml.safe_load(best_yaml.read_text())
    for key, value in best["values"].items():  # the winning values are in best.yaml, ready to train
        here = node
        for part in key.split("."):
            here = here[part]
        assert here == pytest.approx(value)
    assert (best_yaml.parent / "results.csv").read_text().startswith("trial,optim.g.lr,optim.d.lr,model.hidden,last_step")
    # every trial is an ordinary ganflow run under the sweep's name, its W&B run where the user ran the sweep
    trial_runs = [p for p in (runs / "sweep_ring").iterdir() if (p / "config.yaml").is_file()]
    assert len(trial_runs) == 4 and sorted(r["runs"][0] for r in rows) == sorted(str(p) for p in trial_runs)
    wandb_ids = []
    for run in trial_runs:  # one W&B run per trial, grouped by the sweep
        (wandb_run,) = offline_runs(os.environ["WANDB_DIR"], run_id=run.name)
        assert wandb_run.group == "sweep_ring" and wandb_run.job_type == "trial"
        wandb_ids.append(wandb_run.run_id)
    assert len(set(wandb_ids)) == 4
    for header in ("trial", "optim.g.lr", "modes"):
        assert header in proc.stderr  # the trial table
    again = load_job(best_yaml)  # a job `ganflow train` takes as it is: validated, the winning values in it
    assert again.optim.g.lr == pytest.approx(best["values"]["optim.g.lr"]) and again.train.steps == 400


def write_ring_sweep(tmp_path: Path, **fields) -> Path:
    spec = {"name": "ring_sweep", "job": str(JOBS / "ring.yaml"), "overrides": FAST,
            "space": {"optim.g.lr": "loguniform(1e-4, 3e-3)", "optim.d.lr": "loguniform(1e-4, 3e-3)"},
            "metric": "high_quality", **fields}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_pbt_clones_a_trials_checkpoint_into_another_which_goes_on_from_its_step_with_perturbed_rates(tmp_path):
    spec = write_ring_sweep(tmp_path, scheduler="pbt", quantile_fraction=0.5, num_samples=2, max_concurrent_trials=2)
    runs = tmp_path / "runs"
    proc = run_cli("sweep", str(spec), f"storage.uri={runs}", "train.steps=300", "train.checkpoint_every=100", "--json",
                   env={"RAY_ADDRESS": None}, timeout=900, check=True)
    best = json.loads(proc.stdout.strip().splitlines()[-1])  # issue 31: sweep --json, the best trial, last (Tune prints too)
    assert best["trials"] == 2 and Path(best["best_config"]).name == "best.yaml" and best["best_checkpoint"]
    rows = sweep_rows(Path(best["sweep"]))
    assert len(rows) == 2 and not any(r["error"] for r in rows) and all(r["last_step"] == 300 for r in rows)
    forks = [(clone, source) for row in rows for clone, source in zip(row["runs"], row["forked_from"]) if source]
    assert forks, "PBT never exploited"
    for clone, source in forks:
        donor_run, _, name = source.rpartition("/checkpoints/")
        step = int(name.rsplit("_", 1)[1])
        assert any(donor_run in row["runs"] for row in rows)  # a checkpoint of a trial's run, copied into a
        # new run of the exploiting trial, which trained on from that step
        assert read_manifest(Path(clone, "checkpoints", name))["files"] == read_manifest(Path(source))["files"]
        steps = [m["step"] for m in Run.open(clone).read_metrics()]
        assert steps and steps[0] > step or not steps and step == 300
        donor_cfg, clone_cfg = (yaml.safe_load(Path(r, "config.yaml").read_text())["optim"] for r in (donor_run, clone))
        assert (clone_cfg["g"]["lr"], clone_cfg["d"]["lr"]) != (donor_cfg["g"]["lr"], donor_cfg["d"]["lr"])  # explored
        for record in Run.open(clone).read_metrics():  # the perturbed rates train, not the restored optimiser's
            assert (record["lr/g"], record["lr/d"]) == pytest.approx((clone_cfg["g"]["lr"], clone_cfg["d"]["lr"]))


@pytest.mark.slow
def test_a_sweep_whose_driver_is_killed_resumes_without_rerunning_finished_trials(tmp_path):
    STEPS, EVERY = 1200, 100  # the second trial's window (1-5 of 12 evaluations) spans several of Tune's 1-s saves
    # Optuna's TPE picks the trials (its state is restored with the sweep's), one at a time
    spec = write_ring_sweep(tmp_path, search="optuna", num_samples=2, max_concurrent_trials=1)
    runs = tmp_path / "runs"
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    # Tune saves its state every second here (10 s at first by default), while the second trial
    # (12 evaluations) is still training
    driver = subprocess.Popen([sys.executable, "-m", "ganflow.cli", "sweep", str(spec), f"storage.uri={runs}",
                               f"train.steps={STEPS}", f"train.checkpoint_every={EVERY}"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, seen = time.time() + 400, None
        while time.time() < deadline:  # the first trial done, the second one with a checkpoint Tune has saved
            lines = sorted(len(p.read_text().splitlines()) for p in runs.glob("sweeps/*/trials/*.jsonl"))
            states = list(runs.glob("sweeps/*/tune/experiment_state-*.json"))
            if len(lines) == 2 and lines[1] == STEPS // EVERY and 1 <= lines[0] < STEPS // EVERY // 2:
                seen = seen or time.time()
                if states and states[0].stat().st_mtime > seen + 0.5:
                    break
            elif seen and len(lines) > 2:
                pytest.fail(f"the second trial finished before Tune saved its state ({lines}); make the trials longer")
            if driver.poll() is not None:
                pytest.fail(f"the sweep ended before the test saw its second trial part-way ({lines}); make the trials longer")
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never got to its second trial")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver, its in-process Ray, and the trials
        driver.wait()
    (location,) = runs.glob("sweeps/*")
    first = sorted(p for p in (runs / "ring_sweep").iterdir())
    finished = [p for p in first if Run.open(p).read_status()["status"] == "completed"]
    assert len(first) == 2 and len(finished) == 1
    finished_metrics = (finished[0] / "metrics.jsonl").read_text()

    proc = run_cli("sweep", "--resume", str(location), env={"RAY_ADDRESS": None}, timeout=900, check=True)
    assert Path(proc.stdout.strip().splitlines()[-1]) == location / "best.yaml"
    rows = sweep_rows(location)
    assert len(rows) == 2 and not any(r["error"] for r in rows) and all(r["last_step"] == STEPS for r in rows)
    after = sorted(p for p in (runs / "ring_sweep").iterdir())
    assert after == first  # the cut-short trial went on in its own run
    assert (finished[0] / "metrics.jsonl").read_text() == finished_metrics  # the finished one was not run again
    for run in after:
        steps = [m["step"] for m in Run.open(run).read_metrics()]
        assert steps == sorted(set(steps)) and steps[-1] == STEPS and Run.open(run).read_status()["status"] == "completed"
