"""2D Gaussian mixtures (the mode-collapse benchmarks of Metz et al. 2017) and scikit-learn's digits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ganflow.config import DataConfig
from ganflow.core.rng import rng_seed
from ganflow.data.dataset import Dataset, register


def _mixture(centers: torch.Tensor, std: float, n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(rng_seed(seed, 0x2D))
    comp = torch.randint(len(centers), (n,), generator=g)
    x = centers[comp] + std * torch.randn(n, 2, generator=g)
    return Dataset(x=x.float(), y=comp, num_classes=0, centers=centers, std=std)


@register("ring", kind="points", seeded=True, metrics=("modes",))
def ring(cfg: DataConfig, seed: int, storage=None) -> Dataset:
    """8 Gaussians on a circle of radius 2, std 0.02."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return _mixture(centers.float(), 0.02, cfg.num_points, seed)


@register("grid", kind="points", seeded=True, metrics=("modes",))
def grid(cfg: DataConfig, seed: int, storage=None) -> Dataset:
    """25 Gaussians on {-4,-2,0,2,4}^2, std 0.05."""
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    centers = torch.cartesian_prod(ticks, ticks)
    return _mixture(centers, 0.05, cfg.num_points, seed)


DIGITS = [str(k) for k in range(10)]


@register("digits", kind="images", labelled=True, metrics=("fid", "kid", "is", "pr", "classes"), extractor="digits",
          known_classes=lambda cfg: DIGITS)
def digits(cfg: DataConfig, seed: int, storage=None) -> Dataset:
    """scikit-learn's bundled 1797 8x8 digits (no download), bilinearly resized, in [-1, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    if cfg.resolution != 8:
        x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1) * 2 - 1
    if cfg.channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target).long()
    return Dataset(x=x, y=y, num_classes=10, classes=list(DIGITS))
