"""`ganflow sweep`: spec validation before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import JOBS, run_cli


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
