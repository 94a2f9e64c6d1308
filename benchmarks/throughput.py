"""Steady-state images/s of ganflow (Ray Train, 1 and 2 workers) against a plain single-process
PyTorch DCGAN loop on the same model, data and batch size, measured in one process.

    python benchmarks/throughput.py [--steps 300] [--batch 64] [--resolution 32] [--gpu] [--tracking]

`--gpu` runs both on one GPU (ganflow with `scaling.use_gpu=true`, 1 worker) and adds a bf16 row.
`--model NAME` compares that model's shipped digits job (`jobs/NAME_digits.yaml`, or `--job FILE`)
with the same model and recipe (loss, D steps, penalties with their lazy intervals, path length,
EMA) in a hand-written loop; no augmentation in either. `--synthetic N` trains both on N random
images at the job's resolution (labelled when `--classes K`) instead of its data set, e.g. on a GPU:

    python benchmarks/throughput.py --model stylegan2 --job jobs/stylegan2_images_256.yaml --synthetic 512 --gpu --steps 200
    python benchmarks/throughput.py --model resnet --synthetic 50000 --classes 10 --channels 3 --gpu --set model.ngf=64 model.ndf=64

`--tracking` measures what W&B costs instead: 1 Ray worker with tracking disabled vs offline
(scalars every 50 steps, a sample grid every 50, a checkpoint artifact every 100), also as
whole-run wall time. Rows without `--tracking` run with tracking disabled.

The plain loop is what a user writes by hand: BCE losses, two Adams, random batches from a
tensor. ganflow's figure is `throughput/imgs_per_s` from metrics.jsonl, windows after the first.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ganflow import config
from ganflow.core.fit import fit, process_settings
from ganflow.core.losses import lazy_ratio, path_lengths
from ganflow.core.rng import RowRandom
from ganflow.data import Dataset, build_dataset
from ganflow.job import batches_for, build_training, load_job
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


class _Windows:
    """Keeps each log window's images/s, as the Ray worker writes them to metrics.jsonl."""

    def __init__(self):
        self.windows, self.last = [], {}

    def __call__(self, end):
        if end.log:
            self.windows.append(end.metrics["throughput/imgs_per_s"])
            self.last = end.metrics


def ganflow_step_alone(cfg: config.JobConfig, steps: int, threads: int, device: str) -> float:
    """ganflow's Ray-free fit() loop (GAN step, EMA, seeded streams, sampler) in this process:
    splits the overhead between the training loop itself and the Ray Train worker around it.
    Median images/s over the log windows after the first, as `ganflow_timed_run` reads them."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    dataset, state = build_training(cfg, dev)
    hooks = _Windows()
    fit(cfg, state, batches_for(cfg, dataset, device=dev), hooks)
    return statistics.median(hooks.windows[1:])


def ganflow_run(cfg: config.JobConfig) -> float:
    return ganflow_timed_run(cfg)[0]


def ganflow_timed_run(cfg: config.JobConfig) -> tuple:
    """(median images/s over the windows after the first, wall seconds of the whole run)."""
    from ganflow.ray import driver
    started = time.perf_counter()
    run = driver.run(cfg)
    wall = time.perf_counter() - started
    windows = [r["throughput/imgs_per_s"] for r in run.read_metrics()][1:]
    return statistics.median(windows), wall


def hand_loss(name: str):
    """(d, g) as a user writes them for the losses the shipped model jobs use."""
    if name == "hinge":
        return (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean()), (lambda f, r: -f.mean())
    if name == "rpgan":
        return (lambda r, f: F.softplus(f - r).mean()), (lambda f, r: F.softplus(r - f).mean())
    return (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean()), (lambda f, r: F.softplus(-f).mean())


def plain_model_loop(cfg: config.JobConfig, dataset: Dataset, steps: int, device: str) -> tuple:
    """(images/s, peak GPU MiB or None) of the job's model and recipe in a hand-written loop."""
    torch.manual_seed(0)
    x = dataset.x.to(device)
    labels = dataset.y.to(device) if dataset.y is not None else None
    classes = dataset.num_classes
    G, D = build_models(cfg.model, tuple(x.shape[1:]), classes)
    G, D = G.to(device), D.to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    lo, b = cfg.loss, cfg.train.batch_size
    lazy_d = lo.d_reg_every > 1 and (lo.r1_gamma or lo.r2_gamma)
    c_d = lazy_ratio(lo.d_reg_every) if lazy_d else 1.0
    c_g = lazy_ratio(lo.g_reg_every) if lo.pl_weight and lo.g_reg_every > 1 else 1.0
    og, od = cfg.optim.g, cfg.optim.d
    opt_g = torch.optim.Adam(G.parameters(), lr=og.lr * c_g, betas=tuple(v**c_g for v in og.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=od.lr * c_d, betas=tuple(v**c_d for v in od.betas))
    d_loss, g_loss = hand_loss(lo.name)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
    own = hasattr(G, "set_precision")
    if own:
        G.set_precision(low)
        D.set_precision(low)
    scaler = torch.amp.GradScaler(enabled=cfg.train.precision == "fp16")
    auto = (lambda: torch.autocast(device, dtype=low)) if low is not None and not own else contextlib.nullcontext
    gen = torch.Generator(device=device).manual_seed(1)
    rand = (lambda n: {"rand": RowRandom(gen, slice(0, n), n)}) if getattr(G, "random_inputs", False) else (lambda n: {})
    it = [0]
    pl_mean = [0.0]

    def r1(inp, cond, logits=None):
        """R1/R2: from a forward already made on `inp` (R3GAN's Trainer), else with one of its own."""
        if logits is None:
            inp = inp.detach().requires_grad_(True)
            logits = D(inp, cond)
        (grad,) = torch.autograd.grad(logits.float().sum(), inp, create_graph=True)
        return grad.square().flatten(1).sum(1).mean()

    def step():
        for _ in range(lo.n_critic):
            idx = torch.randint(len(x), (b,), device=device)
            real, ry = x[idx], (labels[idx] if labels is not None else None)
            fy = torch.randint(classes, (b,), device=device) if classes else None
            with auto():
                fake_g = G(torch.randn(b, cfg.model.nz, device=device), fy, **rand(b))
                fake = fake_g.detach()
                if not lazy_d:  # the penalties differentiate this very forward
                    real, fake = real.requires_grad_(bool(lo.r1_gamma)), fake.requires_grad_(bool(lo.r2_gamma))
                real_logits, fake_logits = D(real, ry), D(fake, fy)
                loss = d_loss(real_logits.float(), fake_logits.float())
            if not lazy_d:
                loss = (loss + (0.5 * lo.r1_gamma * r1(real, ry, real_logits) if lo.r1_gamma else 0)
                        + (0.5 * lo.r2_gamma * r1(fake, fy, fake_logits) if lo.r2_gamma else 0))
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt_d)
            scaler.update()
            if lazy_d and it[0] % lo.d_reg_every == 0:
                opt_d.zero_grad(set_to_none=True)
                reg = (0.5 * lo.r1_gamma * r1(real, ry) if lo.r1_gamma else 0) + (0.5 * lo.r2_gamma * r1(fake, fy) if lo.r2_gamma else 0)
                scaler.scale(reg * lo.d_reg_every).backward()
                scaler.step(opt_d)
                scaler.update()
        D.requires_grad_(False)
        with auto():
            real_logits = D(real.detach(), ry).float().detach() if lo.name == "rpgan" else None
            loss = g_loss(D(fake_g, fy).float(), real_logits)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        D.requires_grad_(True)
        scaler.step(opt_g)
        scaler.update()
        if lo.pl_weight and it[0] % lo.g_reg_every == 0:
            n = b // 2
            py = torch.randint(classes, (n,), device=device) if classes else None
            images, ws = G(torch.randn(n, cfg.model.nz, device=device), py, return_ws=True, **rand(n))
            lengths = path_lengths(images.float(), ws, torch.randn_like(images.float()))
            pl_mean[0] += 0.01 * (lengths.mean().item() - pl_mean[0])
            reg = (images[:, 0, 0, 0] * 0).sum() + (lengths - pl_mean[0]).square().mean() * lo.pl_weight * lo.g_reg_every
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(reg).backward()
            scaler.step(opt_g)
            scaler.update()
        with torch.no_grad():
            torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - cfg.train.ema_decay)
        it[0] += 1

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rate = images_per_s(step, steps, b * lo.n_critic, device)
    return rate, (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None)


def fit_alone(cfg: config.JobConfig, dataset: Dataset, device: str) -> tuple:
    """(median images/s after the first log window, peak GPU MiB) of ganflow's fit() on `dataset`."""
    dev = torch.device(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, state = build_training(cfg, dev, dataset)
    hooks = _Windows()
    process_settings(cfg.train)  # train.tf32, as the Ray worker sets it
    fit(cfg, state, batches_for(cfg, dataset, device=dev), hooks)
    print("ganflow's last log step:", {k: round(v, 4) for k, v in hooks.last.items() if k.startswith(("loss", "penalty", "step"))})
    return statistics.median(hooks.windows[1:]), (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None)


def synthetic(n: int, channels: int, resolution: int, classes: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1
    y = torch.randint(classes, (n,), generator=g) if classes else None
    return Dataset(x=x, y=y, num_classes=classes, classes=[str(i) for i in range(classes)] if classes else None)


def model_rows(args) -> list:
    device = "cuda" if args.gpu else "cpu"
    torch.set_num_threads(2 if not args.gpu else 8)
    job = Path(args.job) if args.job else JOB.parent / f"{args.model}_digits.yaml"
    over = [f"model.name={args.model}", "train.augment=", "train.augment_p=1.0", f"train.steps={args.steps + 50}",
            "train.log_every=50", "train.sample_every=1000000", "train.checkpoint_every=1000000",
            "tracking.wandb.mode=disabled", *args.set]
    if args.gpu:
        over += ["scaling.use_gpu=true"]
    cfg = load_job(job, over)
    if args.synthetic:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, channels=args.channels or cfg.data.channels))
        dataset = synthetic(args.synthetic, args.channels or cfg.data.channels or 3, cfg.data.resolution, args.classes)
    else:
        dataset = build_dataset(cfg.data)
    plains, alones = [], []
    for _ in range(args.repeat):  # alternating, so a slow spell of the machine hits both
        plains.append(plain_model_loop(cfg, dataset, args.steps, device))
        alones.append(fit_alone(cfg, dataset, device))
    (plain, plain_mem), (alone, alone_mem) = (sorted(runs)[len(runs) // 2] for runs in (plains, alones))
    if args.repeat > 1:
        print(f"runs (images/s): plain {[round(r[0], 1) for r in plains]}, ganflow {[round(r[0], 1) for r in alones]}; medians below")
    where = "1 GPU" if args.gpu else "2 threads"
    mem = (lambda m: f" (peak {m:.0f} MiB)" if m else "")
    rows = [(f"plain PyTorch {args.model} loop, {where}{mem(plain_mem)}", plain, None),
            (f"ganflow fit() alone, no Ray, {where}{mem(alone_mem)}", alone, plain)]
    print(f"{args.model} at {cfg.data.resolution} px, batch {cfg.train.batch_size}, {cfg.train.precision}: "
          f"ganflow {1000 / alone:.2f} s/kimg, plain {1000 / plain:.2f} s/kimg")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=32, help="image side (16 shows the fixed cost a step)")
    p.add_argument("--gpu", action="store_true", help="measure on one GPU instead of 2 CPU cores")
    p.add_argument("--tracking", action="store_true", help="W&B offline vs disabled, 1 Ray worker")
    p.add_argument("--model", help="a model of the zoo: its shipped job against a hand-written loop of it")
    p.add_argument("--job", help="with --model: this job file instead of jobs/MODEL_digits.yaml")
    p.add_argument("--synthetic", type=int, default=0, help="with --model: N random images instead of the job's data")
    p.add_argument("--classes", type=int, default=0, help="with --synthetic: labelled with this many classes")
    p.add_argument("--channels", type=int, default=0, help="with --synthetic: image channels")
    p.add_argument("--set", nargs="*", default=[], help="with --model: more job overrides")
    p.add_argument("--repeat", type=int, default=1, help="with --model: alternate the two this many times, report medians")
    args = p.parse_args()
    if args.model:
        for name, value, ref in model_rows(args):
            print(f"{name:58s}: {value:8.1f} img/s" + (f"  ratio {value / ref:.3f}" if ref else ""))
        return
    import ray

    from ganflow.ray import cluster  # --model needs no Ray (a GPU machine may not have it)

    cluster.start_local_ray(num_cpus=2, num_gpus=1 if args.gpu else 0)
    with tempfile.TemporaryDirectory() as tmp:
        # the plain loop's recipe: non-saturating loss, batch norm in both nets, no augmentation
        common = ["loss.name=nonsaturating", "model.spectral_norm=false", "model.d_norm=batch", "train.augment=",
                  f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"data.resolution={args.resolution}",
                  "train.log_every=50",
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
