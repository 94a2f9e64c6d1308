"""A checkpoint upload cut short (issue 30, fault 14: a job stopped inside it) is not a checkpoint:
not listed, no warning from `sample`, which uses the newest complete one, and removed by the run's
next writer once it holds the lease. Forced by publishing every file of a step but its manifest,
on a local directory and on the loopback S3 server."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from ganflow.core.state import DataMeta
from ganflow.job import build_training, load_job
from ganflow.run import checkpoint as ckpt
from ganflow.run.generator import load_generator
from ganflow.run.layout import RunLayout
from ganflow.run.lease import Lease
from ganflow.run.run import Run
from ganflow.store import S3Options
from tests.conftest import cli_here


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "runs"), S3Options(), {}
    endpoint, bucket = request.getfixturevalue("s3")
    return f"s3://{bucket}/runs", S3Options(endpoint_url=endpoint), {"AWS_ENDPOINT_URL": endpoint}


def test_an_upload_cut_before_its_manifest_is_passed_over_quietly_and_removed_by_the_next_writer(location, tmp_path):
    uri, options, env = location
    cfg = load_job(None, ["data.resolution=16", "model.ngf=8", "model.ndf=8", "train.batch_size=8", f"storage.uri={uri}"])
    run = Run.create(uri, cfg.name, options)
    run.write_config(cfg.to_yaml())
    _, state = build_training(cfg, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        for step in (10, 20):
            state.step = step
            folder = Path(tmp) / str(step)
            ckpt.write_checkpoint(state.state_dict(), cfg.to_dict(), cfg.hash(), folder, DataMeta((1, 16, 16)))
            if step == 10:
                run.publish_checkpoint(folder, step)
            else:  # stopped inside the upload: every file but the manifest, which goes last
                for f in sorted(folder.iterdir()):
                    if f.name != RunLayout.MANIFEST:
                        run.store.put_file(f"{RunLayout.checkpoint(step)}/{f.name}", f)
    assert run.checkpoints() == [RunLayout.checkpoint(10)]
    proc = cli_here("sample", run.uri, "--num", "4", "--out", str(tmp_path / "s.npz"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "refusing checkpoint" not in proc.stderr
    assert load_generator(run.uri, options=options).step == 10
    Lease.take(run.store, run.uri)
    assert run.remove_leftovers() == [RunLayout.checkpoint(20)]
    assert not any(k.startswith(RunLayout.checkpoint(20)) for k in run.store.list(RunLayout.CHECKPOINTS))
    assert run.checkpoints() == [RunLayout.checkpoint(10)]
