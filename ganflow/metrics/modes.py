"""Mode coverage for 2D mixtures (ring, grid): a sample is high quality when it lies within
3 std of a mixture centre; a mode is covered when it receives a high-quality sample."""

from __future__ import annotations

from typing import Dict

import torch


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float, min_count: int = 1) -> Dict[str, float]:
    d = torch.cdist(samples.double(), centers.double())  # (N, K)
    dist, nearest = d.min(dim=1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    return {
        "modes": int((counts >= min_count).sum()),
        "modes_total": len(centers),
        "high_quality": float(good.double().mean()),
    }
