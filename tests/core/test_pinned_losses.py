"""The first losses of every shipped digits job (each model family), and of the step's other paths
(path length, gradient accumulation, flips, regularisers every step), pinned to the values the
code gave before the 2026-12 renovation (issue 28), so that moving the GAN step cannot change what
it computes. `fit` in-process on the CPU, 1 worker; the DDP equality tests cover the split.

The fixture was written by `python -m tests.core.test_pinned_losses --write` on ganflow 092cd4f
(torch 2.13.0 CPU, 2 threads, AVX-512 Xeon). A changed init, RNG stream, batch order, loss or
phase shows from the first steps as 1e-3 or more; float noise between CPUs or thread counts is
<= 3e-6 through step 4 and grows ~4x a step (StyleGAN2's 2.5e-3 rate: 4e-2 by step 20, measured
as 1 thread against 2 here), so later steps only catch a run that went elsewhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

import pytest
import torch

from ganflow.core.fit import StepEnd, fit
from ganflow.job import batches_for, build_training, load_job
from tests.conftest import JOBS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pinned_losses.json"
CASES = {  # name: (job file, overrides, steps)
    "quickstart": ("quickstart", [], 20),
    "cdcgan_digits": ("cdcgan_digits", [], 20),
    "resnet_digits": ("resnet_digits", [], 20),
    "stylegan2_digits": ("stylegan2_digits", [], 20),
    "r3gan_digits": ("r3gan_digits", [], 20),
    "stylegan2_pl_parts_xflip": ("stylegan2_digits", ["loss.pl_weight=2", "loss.g_reg_every=4",
                                                      "train.batch_per_worker=32", "data.xflip=true"], 8),
    "r3gan_reg_every_step": ("r3gan_digits", ["loss.d_reg_every=1"], 6),
}
EARLY_STEPS, EARLY_TOLERANCE, LATE_TOLERANCE = 4, 1e-4, 1e-1


class _Losses:
    def __init__(self):
        self.seen: List[List[float]] = []

    def __call__(self, end: StepEnd) -> None:
        if end.log:
            self.seen.append([end.metrics["loss/d"], end.metrics["loss/g"]])


def first_losses(job: str, overrides: List[str], steps: int) -> List[List[float]]:
    cfg = load_job(JOBS / f"{job}.yaml", [f"train.steps={steps}", "train.log_every=1", "train.sample_every=1000",
                                          "train.checkpoint_every=1000", *overrides])
    dataset, state = build_training(cfg, torch.device("cpu"))
    hooks = _Losses()
    fit(cfg, state, batches_for(cfg, dataset), hooks)
    return hooks.seen


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_first_losses_are_those_before_the_renovation(name):
    want = json.loads(FIXTURE.read_text())[name]
    got = first_losses(*CASES[name])
    assert len(got) == len(want) == CASES[name][2]
    for step, ((d, g), (want_d, want_g)) in enumerate(zip(got, want), start=1):
        tol = EARLY_TOLERANCE if step <= EARLY_STEPS else LATE_TOLERANCE
        assert abs(d - want_d) < tol and abs(g - want_g) < tol, (name, step, (d, g), (want_d, want_g))


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    torch.set_num_threads(2)
    pinned = {name: first_losses(*case) for name, case in CASES.items()}
    FIXTURE.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in pinned.items()) + "\n}\n")
