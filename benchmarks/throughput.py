"""Steady-state images/s of ganflow (Ray Train, 1 and 2 workers) against a plain single-process
PyTorch DCGAN loop on the same model, data and batch size, measured in one process.

    python benchmarks/throughput.py [--steps 300] [--batch 64]

The plain loop is what a user writes by hand: BCE losses, two Adams, random batches from a
tensor. ganflow's figure is `throughput/imgs_per_s` from metrics.jsonl, windows after the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ganflow import config, storage
from ganflow import train as gtrain
from ganflow.data import build_dataset
from ganflow.models import build_models

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"


def plain_pytorch(cfg: config.JobConfig, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = build_dataset(cfg.data).x
    G, D = build_models(cfg.model, tuple(data.shape[1:]))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    b, nz = cfg.train.batch_size, cfg.model.nz
    ones, zeros = torch.ones(b), torch.zeros(b)

    def step():
        real = data[torch.randint(len(data), (b,))]
        fake = G(torch.randn(b, nz))
        loss_d = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    for _ in range(20):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * b / (time.perf_counter() - t)


def ganflow_run(cfg: config.JobConfig) -> float:
    run = gtrain.run(cfg)
    windows = [r["throughput/imgs_per_s"] for r in storage.read_metrics(run)][1:]
    return statistics.median(windows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.log_every=50",
                  "train.sample_every=100000", "train.checkpoint_every=100000", f"storage.uri={tmp}"]
        cfg1 = config.load(JOB, common + ["scaling.num_workers=1", "scaling.resources_per_worker.CPU=2"])
        cfg2 = config.load(JOB, common + ["scaling.num_workers=2", "scaling.resources_per_worker.CPU=1"])
        plain = plain_pytorch(cfg1, args.steps, threads=2)
        one = ganflow_run(cfg1)
        two = ganflow_run(cfg2)
    ray.shutdown()
    print(f"plain PyTorch loop, 1 process, 2 threads : {plain:8.0f} img/s")
    print(f"ganflow, 1 Ray worker (2 CPUs)           : {one:8.0f} img/s  ratio {one / plain:.3f}")
    print(f"ganflow, 2 Ray workers (1 CPU each, DDP) : {two:8.0f} img/s  ratio {two / plain:.3f}")


if __name__ == "__main__":
    main()
