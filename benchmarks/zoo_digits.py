"""The model zoo on digits at equal wall time (or, with --steps, at equal steps), 2 CPU cores: each
shipped digits job trains in this process (ganflow's fit(), no Ray) for the same number of seconds
(or steps), then its EMA generator is scored on 2000 samples: FID in the digits classifier's
features (the project's FID-like digits score, lower is better) and class coverage (the smallest
class's share of the samples, and how many of the 10 classes hold >= 5% of them).

    python benchmarks/zoo_digits.py [--minutes 8] [--jobs quickstart resnet_digits ...] [--out DIR]
    python benchmarks/zoo_digits.py --steps 2000     # equal steps instead: each job's own batch and recipe
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ganflow.core.fit import fit
from ganflow.present.pictures import grid_png
from ganflow.job import batches_for, build_training, load_job
from ganflow.metrics.scoring import score

JOBS = Path(__file__).resolve().parents[1] / "jobs"


class _Budget(Exception):
    pass


class _StopAfter:
    def __init__(self, seconds: float):
        self.deadline, self.step = time.perf_counter() + seconds, 0

    def __call__(self, end):
        if end.log:
            self.step = end.step
            if time.perf_counter() > self.deadline:
                raise _Budget


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=None, help="train each job this many steps instead of --minutes")
    p.add_argument("--jobs", nargs="*", default=["quickstart", "resnet_digits", "stylegan2_digits", "r3gan_digits"])
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--out", default=None, help="a folder for each model's sample grid")
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for job in args.jobs:
        cfg = load_job(JOBS / f"{job}.yaml", [f"train.steps={args.steps or 100000000}", "train.log_every=10",
                                              "train.sample_every=100000000", "train.checkpoint_every=100000000",
                                              "tracking.wandb.mode=disabled"])
        dataset, state = build_training(cfg, torch.device("cpu"))
        hooks = _StopAfter(float("inf") if args.steps else args.minutes * 60)
        started = time.perf_counter()
        try:
            fit(cfg, state, batches_for(cfg, dataset), hooks)
        except _Budget:
            pass
        seconds = time.perf_counter() - started
        G = state.sampler_model.eval()
        values = score(G, cfg, ["fid", "classes"], args.num)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                z = torch.randn(64, cfg.model.nz, generator=torch.Generator().manual_seed(0))
                y = torch.arange(64) % G.num_classes if G.num_classes else None
                (Path(args.out) / f"{job}.png").write_bytes(grid_png(G(z, y).clamp(-1, 1)))
        rows.append((job, cfg.model.name, hooks.step, seconds, values))
        print(f"{job:18s} {cfg.model.name:10s} {hooks.step:6d} steps in {seconds:5.0f} s: digits FID {values['fid']:7.2f}, "
              f"min class share {values['min_class_share']:.3f}, classes >= 5%: {values['classes_covered_5pct']}", flush=True)


if __name__ == "__main__":
    main()
