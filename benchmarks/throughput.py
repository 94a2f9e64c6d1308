"""Steady-state images/s of ganflow (Ray Train, 1 and 2 workers) against a plain single-process
PyTorch DCGAN loop on the same model, data and batch size, measured in one process.

    python benchmarks/throughput.py [--steps 300] [--batch 64] [--gpu] [--tracking]

`--gpu` runs both on one GPU (ganflow with `scaling.use_gpu=true`, 1 worker) and adds a bf16 row.
`--tracking` measures what W&B costs instead: 1 Ray worker with tracking disabled vs offline
(scalars every 50 steps, a sample grid every 50, a checkpoint artifact every 100), also as
whole-run wall time. Rows without `--tracking` run with tracking disabled.

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

from ganflow import config
from ganflow.core.fit import Hooks, fit
from ganflow.data import build_dataset
from ganflow.job import batches_for, build_training, load_job
from ganflow.ray import cluster, driver
from ganflow.models import build_models

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"


def images_per_s(step, steps: int, batch: int, device: str) -> float:
    """Steady-state images/s of `step()` after 20 warm-up calls (GPU work waited for)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(20):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - t)


def plain_pytorch(cfg: config.JobConfig, steps: int, threads: int, device: str) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = build_dataset(cfg.data).x.to(device)
    G, D = build_models(cfg.model, tuple(data.shape[1:]))
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    b, nz = cfg.train.batch_size, cfg.model.nz
    ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)

    def step():
        real = data[torch.randint(len(data), (b,), device=device)]
        fake = G(torch.randn(b, nz, device=device))
        loss_d = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return images_per_s(step, steps, b, device)


class _Windows(Hooks):
    """Keeps each log window's images/s, as the Ray worker writes them to metrics.jsonl."""

    def __init__(self):
        self.windows = []

    def log(self, step, metrics):
        self.windows.append(metrics["throughput/imgs_per_s"])


def ganflow_step_alone(cfg: config.JobConfig, steps: int, threads: int, device: str) -> float:
    """ganflow's Ray-free fit() loop (GAN step, EMA, seeded streams, sampler) in this process:
    splits the overhead between the training loop itself and the Ray Train worker around it.
    Median images/s over the log windows after the first, as `ganflow_timed_run` reads them."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    dataset, state = build_training(cfg, dev)
    hooks = _Windows()
    fit(cfg, state, batches_for(cfg, dataset, state.G, device=dev), hooks)
    return statistics.median(hooks.windows[1:])


def ganflow_run(cfg: config.JobConfig) -> float:
    return ganflow_timed_run(cfg)[0]


def ganflow_timed_run(cfg: config.JobConfig) -> tuple:
    """(median images/s over the windows after the first, wall seconds of the whole run)."""
    started = time.perf_counter()
    run = driver.run(cfg)
    wall = time.perf_counter() - started
    windows = [r["throughput/imgs_per_s"] for r in run.read_metrics()][1:]
    return statistics.median(windows), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--gpu", action="store_true", help="measure on one GPU instead of 2 CPU cores")
    p.add_argument("--tracking", action="store_true", help="W&B offline vs disabled, 1 Ray worker")
    args = p.parse_args()
    import ray

    cluster.start_local_ray(num_cpus=2, num_gpus=1 if args.gpu else 0)
    with tempfile.TemporaryDirectory() as tmp:
        # the plain loop's recipe: non-saturating loss, batch norm in both nets, no augmentation
        common = ["loss.name=nonsaturating", "model.spectral_norm=false", "model.d_norm=batch", "train.augment=",
                  f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.log_every=50",
                  "train.sample_every=100000", "train.checkpoint_every=100000", f"storage.uri={tmp}",
                  "tracking.wandb.mode=disabled"]
        if args.tracking:
            one = common + ["scaling.num_workers=1", "scaling.resources_per_worker.CPU=2", "train.sample_every=50",
                            "train.checkpoint_every=100", f"tracking.wandb.dir={tmp}"]
            plain = plain_pytorch(load_job(JOB, one), args.steps, threads=2, device="cpu")
            off, off_wall = ganflow_timed_run(load_job(JOB, one))
            on, on_wall = ganflow_timed_run(load_job(JOB, one + ["tracking.wandb.mode=offline"]))
            rows = [("plain PyTorch loop, 1 process, 2 threads", plain, None),
                    ("ganflow, 1 Ray worker, W&B disabled", off, plain),
                    ("ganflow, 1 Ray worker, W&B offline", on, plain)]
            print(f"whole run ({args.steps} steps): W&B disabled {off_wall:.1f} s, offline {on_wall:.1f} s, "
                  f"ratio {on_wall / off_wall:.3f}; images/s offline vs disabled {on / off:.3f}")
        elif args.gpu:
            gpu = ["scaling.use_gpu=true", "scaling.num_workers=1", "scaling.resources_per_worker.CPU=2"]
            plain = plain_pytorch(load_job(JOB, common), args.steps, threads=2, device="cuda")
            alone = ganflow_step_alone(load_job(JOB, common), args.steps, threads=2, device="cuda")
            one = ganflow_run(load_job(JOB, common + gpu))
            bf16 = ganflow_run(load_job(JOB, common + gpu + ["train.precision=bf16"]))
            rows = [("plain PyTorch loop, 1 process, 1 GPU", plain, None), ("ganflow fit() alone, no Ray, 1 GPU", alone, plain),
                    ("ganflow, 1 Ray worker, 1 GPU", one, plain), ("ganflow, 1 Ray worker, 1 GPU, bf16", bf16, plain)]
        else:
            cfg1 = load_job(JOB, common + ["scaling.num_workers=1", "scaling.resources_per_worker.CPU=2"])
            cfg2 = load_job(JOB, common + ["scaling.num_workers=2", "scaling.resources_per_worker.CPU=1"])
            plain = plain_pytorch(cfg1, args.steps, threads=2, device="cpu")
            rows = [("plain PyTorch loop, 1 process, 2 threads", plain, None),
                    ("ganflow fit() alone, no Ray, 2 threads", ganflow_step_alone(cfg1, args.steps, 2, "cpu"), plain),
                    ("ganflow, 1 Ray worker (2 CPUs)", ganflow_run(cfg1), plain),
                    ("ganflow, 2 Ray workers (1 CPU each, DDP)", ganflow_run(cfg2), plain)]
    ray.shutdown()
    for name, value, ref in rows:
        print(f"{name:42s}: {value:8.0f} img/s" + (f"  ratio {value / ref:.3f}" if ref else ""))


if __name__ == "__main__":
    main()
