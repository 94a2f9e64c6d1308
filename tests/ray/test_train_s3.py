"""Runs that live in a bucket on the loopback S3 server: trained, resumed, sampled and listed from
fresh processes that know only the s3:// URI; storage outages; bad storage settings; secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from ganflow.run import checkpoint as ckpt
from ganflow.store import S3Options, S3Store
from ganflow.run.run import Run
from ganflow.tracking.runfiles import offline_runs
from tests.conftest import JOBS, S3_ENV, cli_here, free_port, run_cli

pytestmark = pytest.mark.slow

SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]
RAY_FILES = {".validate_storage_marker", "checkpoint_manager_snapshot.json"}  # Ray Train's bookkeeping
LAYOUT = re.compile(r"^(config\.yaml|metrics\.jsonl|status\.json|lease\.json|samples/step_\d{8}\.png"
                    r"|checkpoints/step_\d{8}/(manifest\.json|[A-Za-z_]+\.safetensors))$")


def client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def run_keys(endpoint: str, bucket: str, prefix: str) -> list:
    """Object keys below `prefix/` (folder markers left out), relative to it."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1:] for p in pages for o in p.get("Contents", []) if not o["Key"].endswith("/"))


def fresh_env(endpoint: str, **extra) -> dict:
    """A process that has never seen the run: its AWS settings come from the environment only."""
    return {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", **extra}


def train_args(endpoint: str, bucket: str, *overrides: str) -> list:
    return ["train", str(JOBS / "ring.yaml"), f"storage.uri=s3://{bucket}/runs", f"storage.endpoint_url={endpoint}", *overrides]


def test_a_run_in_a_bucket_is_resumed_sampled_and_listed_from_fresh_processes(cli, s3, tmp_path, monkeypatch):
    endpoint, bucket = s3
    monkeypatch.chdir(tmp_path)  # anything written locally by mistake would land here
    first = cli(*train_args(endpoint, bucket, "train.steps=60", "train.checkpoint_every=30", "train.log_every=10",
                            "train.sample_every=30"), check=True)
    uri = first.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"s3://{bucket}/runs/ring/\d{{8}}-\d{{6}}-[0-9a-f]{{6}}", uri), uri
    prefix = uri.split("/", 3)[3]
    keys = run_keys(endpoint, bucket, prefix)
    ours = [k for k in keys if k not in RAY_FILES]
    assert all(LAYOUT.match(k) for k in ours), [k for k in ours if not LAYOUT.match(k)]
    for step in ("00000030", "00000060"):
        assert f"samples/step_{step}.png" in keys and f"checkpoints/step_{step}/manifest.json" in keys
        assert {"G.safetensors", "D.safetensors", "G_ema.safetensors"} <= {
            k.rsplit("/", 1)[1] for k in keys if k.startswith(f"checkpoints/step_{step}/")}
    assert {"config.yaml", "metrics.jsonl", "status.json"} <= set(keys)
    assert list(tmp_path.iterdir()) == [], "an s3:// run must not write into the working directory"
    (wrun,) = offline_runs(os.environ["WANDB_DIR"], run_id=uri.rsplit("/", 1)[1])  # W&B references the bucket
    refs = [a.references["manifest.json"] for a in wrun.artifacts if a.type == "checkpoint"]
    assert refs == [f"{uri}/checkpoints/step_{s}/manifest.json" for s in ("00000030", "00000060")]

    # bytes changed behind our back: resume must refuse step 60 and fall back to step 30
    s3c = client(endpoint)
    key = f"{prefix}/checkpoints/step_00000060/G.safetensors"
    blob = bytearray(s3c.get_object(Bucket=bucket, Key=key)["Body"].read())
    blob[len(blob) // 2] ^= 0x01
    s3c.put_object(Bucket=bucket, Key=key, Body=bytes(blob))

    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    resumed = cli("train", "--resume", uri, "train.steps=90", env=fresh_env(endpoint), check=True)
    text = resumed.stdout + resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == uri
    assert "refusing checkpoint" in text and "step_00000060" in text and "sha256 mismatch" in text
    assert f"resuming from {uri}/checkpoints/step_00000030 (step 30)" in text
    run = Run.open(uri, S3Options(endpoint_url=endpoint))
    steps = [r["step"] for r in run.read_metrics()]
    assert steps == list(range(10, 91, 10)), "metrics after the restored step are redone, never repeated"
    assert run.read_status()["status"] == "completed"
    assert run.load_latest_checkpoint()[1]["step"] == 90

    out = tmp_path / "s.npz"
    sample = run_cli("sample", uri, "--num", "16", "--out", str(out), env=fresh_env(endpoint))
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert np.load(out)["samples"].shape == (16, 2)

    scored = run_cli("eval", uri, "--num", "500", env=fresh_env(endpoint))
    assert scored.returncode == 0, scored.stderr[-2000:]
    report = json.loads(scored.stdout)
    assert report["checkpoint"] == f"{uri}/checkpoints/step_00000090" and report["step"] == 90
    assert report["modes_total"] == 8 and 0 <= report["modes"] <= 8 and 0 <= report["high_quality"] <= 1

    listed = run_cli("runs", "list", f"s3://{bucket}/runs", "--json", env=fresh_env(endpoint))
    assert listed.returncode == 0, listed.stderr[-2000:]
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["run"] == uri and row["status"] == "completed" and row["step"] == 90 and row["checkpoint_step"] == 90
    assert {"loss/d", "loss/g", "throughput/imgs_per_s"} <= set(row["metrics"])
    table = run_cli("runs", "list", f"s3://{bucket}/runs", env=fresh_env(endpoint)).stdout
    assert uri in table and "completed" in table

    # the secret is nowhere: not in anything written to the bucket, the processes' output or Ray's logs
    import ray

    written = {k: s3c.get_object(Bucket=bucket, Key=f"{prefix}/{k}")["Body"].read() for k in run_keys(endpoint, bucket, prefix)}
    assert "config.yaml" in written and any(k.endswith(".safetensors") for k in written)
    for name, data in written.items():
        assert SECRET.encode() not in data, name
    for proc in (first, resumed, sample, scored, listed):
        assert SECRET not in proc.stdout + proc.stderr
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in logs.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_run_survives_a_storage_outage_and_says_what_it_retried(ray_cluster, s3_server, s3, tmp_path):
    endpoint, bucket = s3
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganflow.cli", *train_args(endpoint, bucket, "train.steps=2500", "train.checkpoint_every=500",
                                                          "train.sample_every=500", "train.log_every=50", "storage.max_attempts=20")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, **fresh_env(endpoint), "RAY_ADDRESS": ray_cluster})
    store = S3Store(f"s3://{bucket}/runs", S3Options(endpoint_url=endpoint))
    deadline = time.time() + 300
    while not any(k.endswith("checkpoints/step_00000500/manifest.json") for k in store.list()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the run never published its first checkpoint:\n" + proc.communicate()[0][-4000:])
        time.sleep(0.2)
    s3_server.stop()
    time.sleep(10)  # the run retries through it (botocore standard mode, up to 20 attempts)
    s3_server.start()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    uri = re.findall(r"^s3://\S+$", out, re.MULTILINE)[-1]
    assert re.search(r"ganflow storage: \w+ attempt \d+/20 failed \(\w+\); retrying", out), out[-4000:]
    run = Run.open(uri, S3Options(endpoint_url=endpoint))
    assert run.checkpoints() == [f"checkpoints/step_{s:08d}" for s in (2500, 2000, 1500, 1000, 500)]
    for key in run.checkpoints():  # every checkpoint whole, none half-visible
        with_manifest = ckpt.fetch(run.store, key, tmp_path / "cache")
        assert ckpt.load_checkpoint(with_manifest)[1]["step"] == int(key[-8:])
    assert run.read_status()["status"] == "completed"
    assert [r["step"] for r in run.read_metrics()] == list(range(50, 2501, 50))


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_missing_credentials_wrong_endpoint_and_missing_bucket_are_one_line_errors(s3, tmp_path):
    endpoint, bucket = s3
    no_credentials = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None,
                      "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                      "AWS_EC2_METADATA_DISABLED": "true"}
    cases = [
        (train_args(endpoint, bucket), no_credentials, "ganflow: error: storage: no AWS credentials found; set AWS_ACCESS_KEY_ID"),
        (train_args(f"http://127.0.0.1:{free_port()}", bucket), fresh_env(endpoint),
         "ganflow: error: storage.endpoint_url: cannot reach http://127.0.0.1:"),
        (train_args(endpoint, "no-such-bucket"), fresh_env(endpoint),
         "ganflow: error: storage.uri: bucket 'no-such-bucket' does not exist"),
    ]
    for args, env, expected in cases:
        proc = cli_here(*args, env={**env, "RAY_ADDRESS": None})
        assert _one_line_error(proc).startswith(expected), proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
    assert run_keys(endpoint, bucket, "runs") == [], "nothing may be written by a run that could not start"

    resume = cli_here("train", "--resume", f"s3://{bucket}/runs/ring/nope", env=fresh_env(endpoint))
    assert _one_line_error(resume) == f"ganflow: error: --resume: s3://{bucket}/runs/ring/nope is not a run (no config.yaml there)"
