"""What evaluation costs and what the digits FID means.

    python benchmarks/eval_cost.py [RUN] [--num 10000]

1. Cost: seconds to score `--num` samples of the quickstart generator (RUN's EMA generator, else
   a freshly initialised one: the cost is the same) at 32x32 with the digits extractor, split into
   generating, extracting, and each metric; against the reference extraction (once per data set,
   then cached).
2. With RUN: its FID against the real-vs-real floor at the same N. The 1797 real digits are split
   into two fixed halves A and B; the floor is FID(B vs A), the run's is FID(899 generated vs A).
   `ganflow eval RUN` reports FID against all 1797 (N=2000 by default), a little lower.
3. The share of training time periodic evaluation takes: run the quickstart job with
   `eval.every=2000` and read `eval/seconds` from metrics.jsonl against `wall_time_s`:
   `python benchmarks/eval_cost.py --share RUN` prints it for such a run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ganflow.metrics.scoring import METRICS, Scored
from ganflow.metrics.features import load_extractor
from ganflow.metrics.kernels import feature_stats, frechet_distance
from ganflow.metrics.reference import real_images
from ganflow.core.sampling import generate
from ganflow.run.generator import load_generator

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def generator(run):
    if run:
        loaded = load_generator(run)
        return loaded.G, loaded.config
    from ganflow.job import load_job, build_training

    cfg = load_job(JOB)
    return build_training(cfg, torch.device("cpu"))[1].G_ema.eval(), cfg


def cost(G, cfg, num: int) -> None:
    torch.manual_seed(0)
    extractor = load_extractor(cfg)
    count, take = real_images(cfg, None, cfg.eval.reference_samples)
    real, t_ref = timed(lambda: extractor.extract(take(slice(None))))
    from ganflow.metrics.reference import Reference

    reference = Reference(real[0], *feature_stats(real[0].numpy()))
    samples, t_gen = timed(lambda: generate(G, num, seed=1234)[0])
    (features, probs), t_ext = timed(lambda: extractor.extract(samples))
    scored = Scored(cfg, features=features, probs=probs, reference=reference)
    rows = [("generate", t_gen), ("extract (digits classifier)", t_ext)]
    for name in ("fid", "kid", "is", "pr", "classes"):
        rows.append((name, timed(lambda: METRICS[name].compute(scored))[1]))
    total = sum(t for _, t in rows)
    print(f"scoring {num} samples at {cfg.data.resolution}x{cfg.data.resolution}, {torch.get_num_threads()} threads:")
    for name, t in rows:
        print(f"  {name:<28} {t:7.2f} s")
    print(f"  {'total':<28} {total:7.2f} s  ({num / total:.0f} samples/s)")
    print(f"reference statistics, once per data set ({count} real images): {t_ref:.2f} s")


def floor(G, cfg, splits: int = 5) -> None:
    """Over `splits` random halvings of the real data (a single split's floor varies by ~+-20%)."""
    import statistics

    extractor = load_extractor(cfg)
    count, take = real_images(cfg, None, 10**9)
    real = extractor.extract(take(slice(None)))[0]
    rows = []
    for seed in range(splits):
        perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        a, b = real[perm[: count // 2]], real[perm[count // 2 :]]
        mu, sigma = feature_stats(a.numpy())
        fake = extractor.extract(generate(G, len(b), seed=1234 + seed)[0])[0]
        rows.append((frechet_distance(mu, sigma, *feature_stats(b.numpy())),
                     frechet_distance(mu, sigma, *feature_stats(fake.numpy()))))
    f_real, f_gen = [statistics.mean(c) for c in zip(*rows)]
    print(f"FID (digits classifier) at N={count - count // 2} against half A ({count // 2} real), mean of {splits} "
          f"splits: generated {f_gen:.2f} (min {min(r[1] for r in rows):.2f}, max {max(r[1] for r in rows):.2f}), "
          f"real half B {f_real:.2f} (min {min(r[0] for r in rows):.2f}, max {max(r[0] for r in rows):.2f}); "
          f"ratio {f_gen / f_real:.2f}")


def share(run: str) -> None:
    from ganflow.run.run import Run

    r = Run.open(run)
    records = r.read_metrics()
    spent = sum(rec.get("eval/seconds", 0.0) for rec in records)
    wall = r.read_status()["fit_seconds"]  # Ray Train's fit, workers' start to the final checkpoint
    evals = [rec for rec in records if "eval/seconds" in rec]
    print(f"{len(evals)} evaluations took {spent:.1f} s of {wall:.1f} s TorchTrainer.fit: {100 * spent / wall:.1f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a quickstart run (its EMA generator); default: an untrained one")
    p.add_argument("--num", type=int, default=10000)
    p.add_argument("--share", action="store_true", help="only print RUN's evaluation share of training time")
    args = p.parse_args()
    if args.share:
        return share(args.run)
    G, cfg = generator(args.run)
    cost(G, cfg, args.num)
    if args.run:
        floor(G, cfg)


if __name__ == "__main__":
    main()
