"""`ganflow submit` and `ganflow jobs` against a real Ray cluster started with `ray start --head`
on loopback (its own processes, no AWS credentials of its own), storing runs on the loopback S3
server: what the job needs reaches it through the Jobs API's env_vars, and nowhere else."""

from __future__ import annotations

import json
import re
import time

import boto3
import numpy as np
import pytest
import yaml

from tests.conftest import JOBS, S3_ENV, cli_here, run_cli
from tests.ray_head import start_head, stop_head

SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    head, address = start_head(tmp_path_factory.mktemp("ray-head") / "head.log")
    yield address
    stop_head(head)


def submitter_env(address: str, endpoint: str) -> dict:
    return {**S3_ENV, "RAY_ADDRESS": address, "AWS_ENDPOINT_URL": None, "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def ring(endpoint: str, bucket: str, *overrides: str) -> list:
    return [str(JOBS / "ring.yaml"), f"storage.uri=s3://{bucket}/runs", f"storage.endpoint_url={endpoint}",
            "train.log_every=10", "train.sample_every=100000", *overrides]


def manifests(endpoint: str, bucket: str) -> list:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/")
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []) if o["Key"].endswith("/manifest.json"))


@pytest.mark.slow
def test_a_submitted_job_runs_on_the_cluster_with_only_the_credentials_it_needs(ray_head, s3, tmp_path):
    endpoint, bucket = s3
    env = submitter_env(ray_head, endpoint)
    # as `ray job submit`: waits and streams the log by default
    proc = run_cli("submit", *ring(endpoint, bucket, "train.steps=40", "train.checkpoint_every=20"), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_id = proc.stdout.strip().splitlines()[-1]
    assert job_id.startswith("ganflow-ring-") and f"{ray_head}/#/jobs/{job_id}" in proc.stderr
    assert "[ganflow] step 40/40" in proc.stderr and f"job {job_id}: SUCCEEDED" in proc.stderr

    info = json.loads(run_cli("jobs", "status", job_id, "--json", env=env, check=True).stdout)
    assert info["status"] == "SUCCEEDED" and info["metadata"]["name"] == "ring" and info["metadata"]["user"]
    assert info["metadata"]["ganflow"] == "train" and info["metadata"]["spec"] == "ring.yaml"
    listed = [json.loads(line) for line in run_cli("jobs", "list", "--json", env=env, check=True).stdout.splitlines()]
    assert {"id": job_id, "status": "SUCCEEDED"}.items() <= next(r for r in listed if r["id"] == job_id).items()
    logs = run_cli("jobs", "logs", job_id, env=env, check=True).stdout
    (run_uri,) = set(re.findall(rf"s3://{bucket}/runs/ring/[0-9]{{8}}-[0-9]{{6}}-[0-9a-f]{{6}}", logs))  # `ganflow train` prints its run
    # the secret went as an env var only (the cluster has none of its own, and wrote to the bucket)
    for text in (logs, info["entrypoint"], json.dumps(info["metadata"]), proc.stdout, proc.stderr):
        assert SECRET not in text
    assert any(k.startswith(run_uri.split("/", 3)[3]) for k in manifests(endpoint, bucket))

    out = tmp_path / "s.npz"
    run_cli("sample", run_uri, "--num", "16", "--out", str(out), env={**env, "AWS_ENDPOINT_URL": endpoint}, check=True)
    assert np.load(out)["samples"].shape == (16, 2)


@pytest.mark.slow
def test_a_stopped_job_is_stopped_with_its_run_marked_and_no_half_written_checkpoint(ray_head, s3, tmp_path):
    endpoint, bucket = s3
    env = submitter_env(ray_head, endpoint)
    submitted = json.loads(run_cli("submit", *ring(endpoint, bucket, "train.steps=1000000", "train.checkpoint_every=50"),
                                   "--no-wait", "--json", env=env, check=True).stdout.strip().splitlines()[-1])  # issue 31
    job_id = submitted["submission_id"]
    assert submitted["status"] == "PENDING" and submitted["dashboard"].startswith("http")
    deadline = time.time() + 300
    while not manifests(endpoint, bucket):
        assert time.time() < deadline, "the job never wrote a checkpoint"
        time.sleep(0.5)
    stopped = run_cli("jobs", "stop", job_id, env=env, timeout=120)
    assert stopped.returncode == 0 and stopped.stdout.split() == [job_id, "STOPPED"]
    (run_key,) = {m.split("/checkpoints/")[0] for m in manifests(endpoint, bucket)}
    s3c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    status = json.loads(s3c.get_object(Bucket=bucket, Key=f"{run_key}/status.json")["Body"].read())
    assert status["status"] == "stopped"
    # every checkpoint that is visible (has its manifest) is whole: the newest one samples
    proc = run_cli("sample", f"s3://{bucket}/{run_key}", "--num", "4", "--out", str(tmp_path / "s.npz"),
                   env={**env, "AWS_ENDPOINT_URL": endpoint})
    assert proc.returncode == 0 and "refusing checkpoint" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_submitted_sweep_runs_its_trials_on_the_cluster_and_leaves_its_results_in_the_bucket(ray_head, s3, tmp_path):
    endpoint, bucket = s3
    env = submitter_env(ray_head, endpoint)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "ring_sweep", "job": str(JOBS / "ring.yaml"), "metric": "high_quality", "scheduler": "fifo", "num_samples": 1,
        "overrides": ["train.steps=40", "train.checkpoint_every=20", "eval.every=20", "eval.num_samples=200",
                      "train.log_every=20", "train.sample_every=100000"],
        "space": {"optim.g.lr": "grid([0.0002, 0.001])"}}))
    proc = run_cli("submit", str(spec), f"storage.uri=s3://{bucket}/runs", f"storage.endpoint_url={endpoint}", "--sweep",
                   "--follow", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_id = proc.stdout.strip().splitlines()[-1]
    assert job_id.startswith("ganflow-ring_sweep-") and f"job {job_id}: SUCCEEDED" in proc.stderr
    info = json.loads(run_cli("jobs", "status", job_id, "--json", env=env, check=True).stdout)
    assert info["metadata"]["ganflow"] == "sweep" and info["entrypoint"] == "python -m ganflow.cli sweep sweep.yaml"
    s3c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3c.list_objects_v2(Bucket=bucket, Prefix="runs/sweeps/").get("Contents", [])]
    (results,) = [k for k in keys if k.endswith("/results.jsonl")]
    rows = [json.loads(line) for line in s3c.get_object(Bucket=bucket, Key=results)["Body"].read().splitlines()]
    assert sorted(r["optim.g.lr"] for r in rows) == [0.0002, 0.001] and all(r["last_step"] == 40 for r in rows)
    assert any(k.endswith("/best.yaml") for k in keys) and SECRET not in proc.stderr


def test_bad_submissions_are_one_line_errors(ray_head, tmp_path):
    unreachable = run_cli("submit", str(JOBS / "ring.yaml"), f"storage.uri={tmp_path}", "--address", "http://127.0.0.1:1",
                          env={"RAY_ADDRESS": None}, timeout=120)
    relative = run_cli("submit", str(JOBS / "ring.yaml"), "storage.uri=runs", "--address", ray_head, timeout=120)
    unknown = run_cli("jobs", "status", "ganflow-nope-1", "--address", ray_head, timeout=120)
    bad_key = run_cli("submit", str(JOBS / "ring.yaml"), "optim.g.lrate=1", "--address", ray_head, timeout=120)
    for proc, start in ((unreachable, "--address http://127.0.0.1:1: no Ray dashboard answers there"),
                        (relative, "storage.uri: 'runs' is a path relative to this machine"),
                        (unknown, "job ganflow-nope-1: no such job on this cluster"),
                        (bad_key, "config: optim.g.lrate")):
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"ganflow: error: {start}"), line


def test_network_variables_for_the_cluster_go_by_name_or_as_name_value(monkeypatch):
    """`ganflow submit --env`: DDP across nodes may need the cluster's interface named (GLOO_SOCKET_IFNAME
    on CPUs, NCCL_SOCKET_IFNAME on GPUs); a value from here, or one given for the cluster."""
    from ganflow.job import load_job
    from ganflow.ray.jobs import needed_env

    cfg = load_job(JOBS / "ring.yaml", ["tracking.wandb.mode=disabled"])
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv("NCCL_DEBUG", raising=False)
    sent = needed_env(cfg, ["GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME=eth0", "NCCL_DEBUG"])
    assert sent == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "eth0"}, "an unset name sends nothing"


def test_a_staged_job_sends_what_it_needs_and_no_secret_it_does_not(monkeypatch, tmp_path):
    """Issue 30, fault 10: free text from the environment and values equal to a credential (however
    short) are redacted in the staged job; WANDB_API_KEY goes only to a job that logs online; the
    AWS variables go whenever any s3:// URI is in the job (here only eval.reference)."""
    from ganflow.commands.submit import prepare_train

    monkeypatch.setenv("OPENAI_KEY", "sk-live-0123456789")
    monkeypatch.setenv("DB_PASS", "hunter2")
    monkeypatch.setenv("WANDB_API_KEY", "w" * 40)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-for-the-test")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    overrides = ["storage.uri=/shared/runs", "tracking.wandb.notes=${oc.env:OPENAI_KEY}", "tracking.wandb.group=hunter2",
                 "eval.reference=s3://team/stats/fid.npz"]
    offline = prepare_train(str(JOBS / "ring.yaml"), overrides + ["tracking.wandb.mode=offline"], tmp_path, ship_code=False)
    staged = (tmp_path / "job.yaml").read_text()
    for secret in ("sk-live-0123456789", "hunter2"):
        assert secret not in staged and secret not in json.dumps(offline.runtime_env | offline.metadata)
    assert staged.count("<redacted>") == 2
    sent = offline.runtime_env["env_vars"]
    assert "WANDB_API_KEY" not in sent, "an offline job has no use for the API key"
    assert sent["AWS_SECRET_ACCESS_KEY"] == "aws-secret-for-the-test"
    online = prepare_train(str(JOBS / "ring.yaml"), overrides + ["tracking.wandb.mode=online"], tmp_path, ship_code=False)
    assert online.runtime_env["env_vars"]["WANDB_API_KEY"] == "w" * 40
    local = prepare_train(str(JOBS / "ring.yaml"), ["storage.uri=/shared/runs", "tracking.wandb.mode=disabled"], tmp_path,
                          ship_code=False)
    assert not any(name.startswith(("AWS_", "WANDB_")) for name in local.runtime_env.get("env_vars", {}))


def test_a_resume_is_staged_from_the_runs_own_config_and_bad_runs_are_one_line(s3, tmp_path, monkeypatch):
    """Issue 31, part 8: `ganflow submit --resume RUN key=value`: validated here against the run's own
    config; the cluster runs `train --resume RUN key=value` with the S3 variables it needs."""
    from ganflow.commands.submit import prepare_resume
    from ganflow.job import load_job
    from ganflow.run.run import Run
    from ganflow.store import S3Options

    endpoint, bucket = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    cfg = load_job(JOBS / "ring.yaml", [f"storage.uri=s3://{bucket}/runs", f"storage.endpoint_url={endpoint}"])
    run = Run.create(cfg.storage.uri, cfg.name, S3Options(endpoint_url=endpoint))
    run.write_config(cfg.to_yaml())
    sub = prepare_resume(run.uri, ["train.steps=24000"], tmp_path, ship_code=False)
    assert sub.entrypoint == f"python -m ganflow.cli train --resume {run.uri} train.steps=24000"
    assert sub.runtime_env["env_vars"]["AWS_SECRET_ACCESS_KEY"] == S3_ENV["AWS_SECRET_ACCESS_KEY"]
    for argv, start in ((["--resume", "runs/ring/x"], "--resume: 'runs/ring/x' is a path relative to this machine"),
                        (["--resume", f"s3://{bucket}/runs/ring/none"], f"--resume: s3://{bucket}/runs/ring/none is not a run"),
                        (["--resume", run.uri, "model.hidden=7", "train.steps=-1"], "config: train.steps"),
                        (["--resume", run.uri, "jobs/ring.yaml"], "submit --resume RUN takes overrides only")):
        proc = cli_here("submit", *argv, "--address", "http://127.0.0.1:1")
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"ganflow: error: {start}"), line
