"""Shared fixtures: one real local Ray per test session, shared by in-process runs and CLI
subprocesses (through RAY_ADDRESS), so only the first test pays for Ray's start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """`ganflow ARGS` in a fresh process, as a user would run it."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "ganflow.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ganflow {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def cli(ray_cluster):
    """Run the CLI against the session's Ray cluster."""

    def _run(*args: str, **kw):
        env = {"RAY_ADDRESS": ray_cluster, **kw.pop("env", {})}
        return run_cli(*args, env=env, **kw)

    return _run
