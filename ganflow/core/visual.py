"""PNG output: image grids and 2D scatter plots, with Pillow alone."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def grid_png(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> bytes:
    """(N, C, H, W) in [-1, 1] -> PNG bytes of an nrow-wide grid."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = x[i].numpy()
    img = Image.fromarray(canvas[0] if c == 1 else canvas.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def scatter_png(points: torch.Tensor, centers: torch.Tensor | None = None, size: int = 512, extent: float = 5.0) -> bytes:
    """2D samples (N, 2) as a scatter plot on [-extent, extent]^2, centres in red."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    to_px = lambda p: ((p[0] + extent) / (2 * extent) * size, (extent - p[1]) / (2 * extent) * size)  # noqa: E731
    for p in points.detach().float().cpu().tolist():
        x, y = to_px(p)
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(31, 119, 180))
    for p in ([] if centers is None else centers.tolist()):
        x, y = to_px(p)
        draw.line([x - 5, y, x + 5, y], fill="red")
        draw.line([x, y - 5, x, y + 5], fill="red")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
