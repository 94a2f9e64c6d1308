"""The EMA generator's BatchNorm statistics (issue 29, defect 1), on the quickstart (DCGAN, BN in G):
train it in this process (ganflow's fit(), no Ray) for --steps, then score on --num samples, FID in
the digits classifier's features (lower is better), four generators that share the EMA weights
and differ only in the statistics they normalise with:

- live G (its own weights and statistics), for scale;
- EMA G, statistics copied from the live G at every step (ganflow before this fix);
- EMA G, statistics averaged with the weights (ganflow now, as BigGAN-PyTorch);
- EMA G, standing statistics: recomputed over --standing batches in train mode (the costly ideal).

    python benchmarks/ema_bn.py [--steps 3000] [--num 2000] [--standing 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from ganflow.core.fit import fit
from ganflow.job import batches_for, build_training, load_job
from ganflow.metrics.scoring import score

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"


@torch.no_grad()
def standing(G: torch.nn.Module, batches: int, batch: int, seed: int) -> torch.nn.Module:
    """A copy of G whose BN statistics are the plain average over `batches` fresh batches."""
    G = copy.deepcopy(G).train()
    for m in G.modules():
        if hasattr(m, "running_mean"):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        G(torch.randn(batch, G.nz, generator=g), None)
    return G.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--standing", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    cfg = load_job(JOB, [f"train.steps={args.steps}", f"train.seed={args.seed}", f"train.sample_every={args.steps}",
                         "tracking.wandb.mode=disabled"])
    dataset, state = build_training(cfg, torch.device("cpu"))
    started = time.perf_counter()
    fit(cfg, state, batches_for(cfg, dataset))
    print(f"quickstart, {args.steps} steps (ema_decay {cfg.train.ema_decay}) in {time.perf_counter() - started:.0f} s")
    averaged = state.G_ema.eval()
    copied = copy.deepcopy(averaged)
    for b_copy, b in zip(copied.buffers(), state.G.buffers()):
        b_copy.copy_(b)
    candidates = {
        "live G": state.G.eval(),
        "EMA G, BN statistics copied from the live G (before)": copied,
        "EMA G, BN statistics averaged with the weights (now)": averaged,
        f"EMA G, standing statistics ({args.standing} batches)": standing(averaged, args.standing,
                                                                         cfg.train.batch_size, args.seed + 1),
    }
    for label, G in candidates.items():
        fid = score(G, cfg, ["fid"], args.num)["fid"]
        print(f"{label}: digits FID {fid:.3f} (n={args.num})", flush=True)


if __name__ == "__main__":
    main()
