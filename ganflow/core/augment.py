"""DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout, applied to real
and fake images alike so D cannot tell them apart by the augmentation.

Randomness comes from an explicit `torch.Generator`, so a resumed run augments identically, and
is drawn for the whole global batch and sliced to this worker's rows (`rows`), so 2 workers on
half-batches augment exactly as 1 worker on the full batch.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


Rows = Optional[Tuple[int, int]]  # (offset of x's first row in the global batch, global batch size)


def _rows(x: Tensor, rows: Rows) -> Tuple[int, int]:
    return rows if rows is not None else (0, x.shape[0])


def _rand(x: Tensor, g: Optional[torch.Generator], rows: Rows, *shape) -> Tensor:
    offset, total = _rows(x, rows)
    return torch.rand(total, *shape, generator=g, device=x.device, dtype=x.dtype)[offset:offset + x.shape[0]]


def _randint(low: int, high: int, x: Tensor, g: Optional[torch.Generator], rows: Rows) -> Tensor:
    offset, total = _rows(x, rows)
    return torch.randint(low, high, (total, 1, 1), generator=g, device=x.device)[offset:offset + x.shape[0]]


def color(x: Tensor, g: Optional[torch.Generator] = None, rows: Rows = None) -> Tensor:
    x = x + (_rand(x, g, rows, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, g, rows, 1, 1, 1) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, g, rows, 1, 1, 1) + 0.5) + mean  # contrast


def translation(x: Tensor, g: Optional[torch.Generator] = None, rows: Rows = None, ratio: float = 0.125) -> Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = _randint(-sh, sh + 1, x, g, rows)
    ty = _randint(-sw, sw + 1, x, g, rows)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])  # zero border, as in the reference code
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: Tensor, g: Optional[torch.Generator] = None, rows: Rows = None, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = _randint(0, h + (1 - ch % 2), x, g, rows)
    oy = _randint(0, w + (1 - cw % 2), x, g, rows)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij"
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


AUGMENTATIONS: Dict[str, Callable[..., Tensor]] = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    def __init__(self, policy: str = ""):
        self.ops = [AUGMENTATIONS[p.strip()] for p in policy.split(",") if p.strip()]

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: Tensor, g: Optional[torch.Generator] = None, rows: Rows = None, p: Optional[float] = None) -> Tensor:
        """Every op on every image; with `p`, each op on each image with probability p (ADA's way)."""
        for op in self.ops:
            if p is None:
                x = op(x, g, rows)
            else:
                out = op(x, g, rows)
                x = torch.where(_rand(x, g, rows, 1, 1, 1) < p, out, x)
        return x


class AdaptiveP:
    """StyleGAN2-ADA's overfitting heuristic (Karras et al. 2020b, section 3): every `interval`
    steps, r = E[sign(D(augmented real))] over those steps; p moves by batch*interval/(kimg*1000)
    towards more augmentation while r > target, less while below. Sums are over the global batch."""

    interval, kimg = 4, 500

    def __init__(self, target: float, batch_size: int):
        self.target, self.batch_size = target, batch_size

    def update(self, p: float, sign_sum: float, count: float) -> float:
        r = sign_sum / max(count, 1.0)
        step = self.batch_size * self.interval / (self.kimg * 1000)
        return max(p + (step if r > self.target else -step if r < self.target else 0.0), 0.0)
