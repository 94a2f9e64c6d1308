"""Digits quality report: class coverage and Frechet distance in the digits classifier's feature
space, against the real-vs-real floor at the same sample count."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ganflow.metrics.digits_classifier import digits_split, load_digits_classifier
from ganflow.metrics.kernels import feature_stats, frechet_distance


@torch.no_grad()
def _features(model, x: torch.Tensor, batch: int = 500) -> tuple:
    feats, preds = [], []
    for i in range(0, len(x), batch):
        f = model.features(x[i : i + batch])
        feats.append(f)
        preds.append(model.head(f).argmax(1))
    return torch.cat(feats).numpy(), torch.cat(preds)


def reference_halves(seed: int = 0):
    """All 1797 real digits split into two fixed halves: A is the reference, B the real-vs-real probe."""
    x_tr, _, x_te, _ = digits_split()
    x = torch.cat([x_tr, x_te])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    half = len(x) // 2
    return x[perm[:half]], x[perm[half:]]


def digits_report(samples: torch.Tensor) -> Dict[str, float]:
    """`samples` (N, C, H, W) in [-1, 1]; N is cut to the probe half's size so both distances share N."""
    model = load_digits_classifier()
    ref, probe = reference_halves()
    n = min(len(samples), len(probe))
    f_ref, _ = _features(model, ref)
    f_probe, _ = _features(model, probe[:n])
    f_gen, pred = _features(model, samples[:n].float())
    mu_r, s_r = feature_stats(f_ref)
    floor = frechet_distance(mu_r, s_r, *feature_stats(f_probe))
    fd = frechet_distance(mu_r, s_r, *feature_stats(f_gen))
    shares = np.bincount(pred.numpy(), minlength=10) / n
    return {
        "fd_digits": fd,
        "fd_real_vs_real": floor,
        "fd_ratio": fd / floor,
        "min_class_share": float(shares.min()),
        "classes_covered_5pct": int((shares >= 0.05).sum()),
        "num_samples": n,
    }
