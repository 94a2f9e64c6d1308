"""PNG output: image grids and 2D scatter plots, with Pillow alone."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _png(canvas: np.ndarray) -> bytes:
    """(C, H, W) uint8, C 1 or 3 -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(canvas[0] if canvas.shape[0] == 1 else canvas.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def image_png(image: torch.Tensor) -> bytes:
    """One (C, H, W) image in [-1, 1] -> PNG bytes."""
    return _png(_uint8(image).numpy())


def grid_png(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> bytes:
    """(N, C, H, W) in [-1, 1] -> PNG bytes of an nrow-wide grid."""
    x = _uint8(images)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = x[i].numpy()
    return _png(canvas)


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


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def curves_png(panels: "dict[str, dict[str, list]]", width: int = 420, height: int = 260) -> bytes:
    """Line charts side by side, one panel per title, each a {series: [(x, y), ...]} dict; axes
    labelled with their ranges, series with their names (Pillow alone, no plotting library)."""
    panels = {t: {n: pts for n, pts in series.items() if pts} for t, series in panels.items()}
    panels = {t: s for t, s in panels.items() if s}
    img = Image.new("RGB", (width * max(len(panels), 1), height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 10, 22, 34
    for i, (title, series) in enumerate(panels.items()):
        x0, x1 = i * width + left, (i + 1) * width - right
        y0, y1 = height - bottom, top
        xs = [x for pts in series.values() for x, _ in pts]
        ys = [y for pts in series.values() for _, y in pts]
        xlo, xhi = min(xs), max(xs)
        ylo, yhi = min(ys), max(ys)
        xspan, yspan = (xhi - xlo) or 1.0, (yhi - ylo) or 1.0
        draw.rectangle([x0, y1, x1, y0], outline=(160, 160, 160))
        draw.text((x0, 4), title, fill="black")
        draw.text((x0 - left + 2, y1), f"{yhi:.4g}", fill=(90, 90, 90))
        draw.text((x0 - left + 2, y0 - 10), f"{ylo:.4g}", fill=(90, 90, 90))
        draw.text((x0, y0 + 4), f"{xlo:g}", fill=(90, 90, 90))
        draw.text((x1 - 40, y0 + 4), f"{xhi:g}", fill=(90, 90, 90))
        for k, (name, pts) in enumerate(series.items()):
            color = PALETTE[k % len(PALETTE)]
            line = [(x0 + (x - xlo) / xspan * (x1 - x0), y0 - (y - ylo) / yspan * (y0 - y1)) for x, y in pts]
            if len(line) > 1:
                draw.line(line, fill=color, width=2)
            for px, py in line if len(line) < 30 else line[-1:]:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
            draw.text((x0 + 6 + 110 * k, y0 + 18), name, fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
