"""`ganflow sweep`: spec validation before anything starts, and a real Ray Tune sweep of the ring
job (in-process Ray, each trial its own TorchTrainer) whose best.yaml trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import JOBS, run_cli

RING_SWEEP = JOBS / "sweep_ring.yaml"


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
    ({"space": {"loss.name": "choice([hinge, wgan])"}}, "space.loss.name: the arguments of choice(...) must be numbers or a [list]"),
    ({"space": {"loss.name": "choice(['hinge', 'wasserstein'])"}}, "space.loss.name: choice can give 'wasserstein', which the job refuses"),
    ({"scheduler": "hyperband"}, "scheduler: 'hyperband'; choose one of fifo, asha"),
    ({"metric": "fid"}, "metric: 'fid' is not evaluated by this job's eval.metrics (modes)"),
    ({"budget": 3}, "budget: unknown sweep field"),
])
def test_a_bad_sweep_spec_is_one_line_naming_the_field_exit_2_before_ray(tmp_path, fields, expected):
    proc = run_cli("sweep", str(write_spec(tmp_path, **fields)), f"storage.uri={tmp_path / 'runs'}",
                   env={"RAY_ADDRESS": None}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"ganflow: error: {expected}"), line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_asha_sweep_of_ring_stops_the_worst_trials_early_and_its_best_yaml_trains(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli("sweep", str(RING_SWEEP), f"storage.uri={runs}", env={"RAY_ADDRESS": None}, timeout=900, check=True)
    best_yaml = Path(proc.stdout.strip().splitlines()[-1])
    assert best_yaml.name == "best.yaml" and best_yaml.parent.parent == runs / "sweeps"
    rows = [json.loads(line) for line in (best_yaml.parent / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4 and not any(r["error"] for r in rows)
    max_steps = 1200
    assert sum(r["last_step"] for r in rows) < 4 * max_steps  # ASHA stopped some trials at a rung
    assert max(r["last_step"] for r in rows) == max_steps  # and let the best run to the end
    best = json.loads((best_yaml.parent / "best.json").read_text())
    assert best["value"] == max(r["best_high_quality"] for r in rows)
    assert Path(best["checkpoint"], "manifest.json").is_file()
    for key, value in best["values"].items():  # the winning values are in best.yaml, ready to train
        section, _, name = key.partition(".")
        node = yaml.safe_load(best_yaml.read_text())
        for part in key.split("."):
            node = node[part]
        assert node == pytest.approx(value)
    assert (best_yaml.parent / "results.csv").read_text().startswith("trial,optim.g.lr,optim.d.lr,model.hidden,last_step")
    # every trial is an ordinary ganflow run under the sweep's name
    assert len([p for p in (runs / "sweep_ring").iterdir() if (p / "config.yaml").is_file()]) == 4
    for header in ("trial", "optim.g.lr", "high_quality"):
        assert header in proc.stderr  # the trial table
    trained = run_cli("train", str(best_yaml), "train.steps=20", "train.checkpoint_every=20", "eval.every=20",
                      f"storage.uri={tmp_path / 'again'}", env={"RAY_ADDRESS": None}, timeout=300, check=True)
    assert Path(trained.stdout.strip().splitlines()[-1]).is_dir()
