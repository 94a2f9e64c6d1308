"""Digits quality report: class coverage and Frechet distance in the digits classifier's feature
space, against the real-vs-real floor at the same sample count."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from ganflow.metrics.digits_classifier import RESOLUTION, digits_split, load_digits_classifier
from ganflow.metrics.kernels import feature_stats, frechet_distance


@torch.no_grad()
def digits_features(x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The classifier's penultimate features (N, D) of images in [-1, 1], any size: resized to the
    classifier's 32x32 and averaged to grey first. What each worker extracts for its share."""
    model = load_digits_classifier()
    x = x.float().cpu()
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-1] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    return torch.cat([model.features(x[i : i + batch]) for i in range(0, len(x), batch)])


def reference_halves(seed: int = 0):
    """All 1797 real digits split into two fixed halves: A is the reference, B the real-vs-real probe."""
    x_tr, _, x_te, _ = digits_split()
    x = torch.cat([x_tr, x_te])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    half = len(x) // 2
    return x[perm[:half]], x[perm[half:]]


@torch.no_grad()
def digits_report_from_features(f_gen: torch.Tensor) -> Dict[str, float]:
    """FD to the reference half and class coverage, from generated samples' features; N is cut to
    the probe half's size so the distance and its real-vs-real floor share N."""
    model = load_digits_classifier()
    ref, probe = reference_halves()
    n = min(len(f_gen), len(probe))
    f_gen = f_gen[:n].float()
    mu_r, s_r = feature_stats(digits_features(ref).numpy())
    floor = frechet_distance(mu_r, s_r, *feature_stats(digits_features(probe[:n]).numpy()))
    fd = frechet_distance(mu_r, s_r, *feature_stats(f_gen.numpy()))
    shares = np.bincount(model.head(f_gen).argmax(1).numpy(), minlength=10) / n
    return {
        "fd_digits": fd,
        "fd_real_vs_real": floor,
        "fd_ratio": fd / floor,
        "min_class_share": float(shares.min()),
        "classes_covered_5pct": int((shares >= 0.05).sum()),
        "num_samples": n,
    }


def digits_report(samples: torch.Tensor) -> Dict[str, float]:
    """`samples` (N, C, H, W) in [-1, 1]."""
    return digits_report_from_features(digits_features(samples))
