"""`ganflow sample s3://...` from a process that has only the URI (and AWS_* in its environment)."""

from __future__ import annotations

import numpy as np

from ganflow.run import checkpoint as ckpt
from ganflow.store import S3Options, S3Store
from ganflow.core.sampling import generate
from ganflow.commands.common import load_generator
from tests.conftest import S3_ENV, cli_here, run_cli, trained_checkpoint


def test_sample_from_a_run_in_s3_matches_sampling_the_same_checkpoint_locally(s3, tmp_path):
    endpoint, bucket = s3
    local = trained_checkpoint(tmp_path, "ring.yaml", steps=3, overrides=("train.batch_size=64",))
    store = S3Store(f"s3://{bucket}/runs", S3Options(endpoint_url=endpoint))
    ckpt.publish_to(store, local, "ring/run1/checkpoints/step_00000003")
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}

    for uri in (f"s3://{bucket}/runs/ring/run1", f"s3://{bucket}/runs/ring/run1/checkpoints/step_00000003"):
        out = tmp_path / "s.npz"
        proc = run_cli("sample", uri, "--num", "32", "--seed", "7", "--out", str(out), env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        expected, _ = generate(load_generator(local)[0], 32, seed=7)
        assert np.array_equal(np.load(out)["samples"], expected.numpy())


def test_sample_from_a_missing_bucket_is_one_line_exit_2(s3, tmp_path):
    endpoint, _ = s3
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    proc = cli_here("sample", "s3://no-such-bucket/runs/x", "--num", "4", "--out", str(tmp_path / "s.npz"), env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("ganflow: error: storage"), proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "s.npz").exists()
