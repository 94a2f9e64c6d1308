"""images/s of ganflow's fit() with each GPU switch off and on: train.channels_last, train.compile,
train.tf32 (each alone against the plain setting), for the quickstart DCGAN at 64 px and the
largest model of the zoo (StyleGAN2 at 256 px), on random images of the job's shape.

    python benchmarks/gpu_flags.py [--steps 200] [--cpu]

`--cpu` is a smoke run on 2 cores: the DCGAN at 32 px only (compile costs ~20 s of code generation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import fit_alone, synthetic  # noqa: E402

from ganflow.job import load_job  # noqa: E402

JOBS = Path(__file__).resolve().parents[1] / "jobs"
MODELS = {  # name: (job, overrides, synthetic images)
    "dcgan 64 px (quickstart)": ("quickstart.yaml", ["data.resolution=64", "train.batch_size=256"], 4096),
    "stylegan2 256 px": ("stylegan2_images_256.yaml", [], 512),
}
SWITCHES = [[], ["train.channels_last=true"], ["train.compile=true"], ["train.tf32=true"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args()
    device = "cpu" if args.cpu else "cuda"
    common = [f"train.steps={args.steps + 50}", "train.log_every=50", "train.sample_every=1000000",
              "train.checkpoint_every=1000000", "tracking.wandb.mode=disabled", "train.augment="]
    if not args.cpu:
        common += ["scaling.use_gpu=true", "scaling.resources_per_worker.CPU=1"]
    models = {"dcgan 32 px (quickstart)": ("quickstart.yaml", ["train.batch_size=64"], 1024)} if args.cpu else MODELS
    for name, (job, over, n) in models.items():
        base = None
        for switch in SWITCHES:
            cfg = load_job(JOBS / job, [*over, *common, *switch] + (["train.precision=fp32"] if args.cpu else []))
            data = synthetic(n, cfg.data.channels or (1 if cfg.data.name == "digits" else 3), cfg.data.resolution, 0)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fit_alone sets them under train.tf32
            rate, mem = fit_alone(cfg, data, device)
            base = base or rate
            label = switch[0] if switch else "plain (TF32 off everywhere)"
            print(f"{name:28s} {label:28s} {rate:9.1f} img/s  x{rate / base:.2f}" + (f"  peak {mem:.0f} MiB" if mem else ""),
                  flush=True)


if __name__ == "__main__":
    main()
