"""The Python API (issue 31) as a notebook user calls it: a generator loaded by location samples
deterministically with labels and devices; runs come back as typed records; the README's example
runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ganflow
from ganflow.core.sampling import SampleError
from tests.conftest import JOBS, trained_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def test_a_loaded_generator_samples_by_seed_label_and_device(tmp_path):
    checkpoint = trained_checkpoint(tmp_path, "cdcgan_digits.yaml", steps=1, overrides=("model.ngf=4", "model.ndf=4",
                                                                                        "data.resolution=16"))
    g = ganflow.load_generator(str(checkpoint))
    assert isinstance(g, ganflow.Generator) and g.num_classes == 10 and g.resolution == 16 and g.step == 1
    assert g.config.model.name == "cdcgan" and "cdcgan" in repr(g)
    x = g.sample(6, seed=3)
    assert x.shape == (6, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, g.to("cpu").sample(6, seed=3)) and not torch.equal(x, g.sample(6, seed=4))
    threes, mixed = g.sample(4, labels=3, seed=3), g.sample(4, labels=[3, 3, 3, 3], seed=3)
    assert torch.equal(threes, mixed)
    for bad, message in (({"labels": 10}, r"\[0, 9\]"), ({"labels": [1, 2]}, "one for each of the 4"),
                         ({"truncation": 0.5}, "no style space")):
        with pytest.raises(SampleError, match=message):
            g.sample(4, **bad)


def test_runs_come_back_as_typed_records(tmp_path):
    from ganflow.job import load_job
    from ganflow.run.run import Run

    cfg = load_job(JOBS / "ring.yaml", [f"storage.uri={tmp_path}"])
    run = Run.create(str(tmp_path), cfg.name)
    run.write_config(cfg.to_yaml())
    run.write_status("completed", step=5)
    run.append_metrics({"step": 5, "loss/d": 1.2, "eval/high_quality": 0.9})
    (record,) = ganflow.runs(tmp_path)
    assert isinstance(record, ganflow.RunRecord)
    assert (record.run, record.status, record.step, record.checkpoint_step) == (run.uri, "completed", 5, None)
    assert record.metrics["loss/d"] == 1.2 and record.best == {"name": "high_quality", "value": 0.9, "step": 5}


@pytest.mark.slow  # trains the ring for 300 steps on an in-process Ray: ~25 s
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    block = re.search(r"<!-- api-example.*?-->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "jobs").symlink_to(JOBS)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["points"].shape == (1000, 2)
    assert [r.status for r in ganflow.runs("runs")] == ["completed"]
