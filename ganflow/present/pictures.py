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


def curves_png(panels: "dict[str, dict[str, list]]", width: float = 4.6, height: float = 3.2) -> bytes:
    """Line charts side by side (matplotlib), one panel per title, each a {series: [(x, y), ...]}
    dict: ticks, a grid, a legend; a log scale when a panel's values are positive and span more
    than a decade; points marked where there are few (evaluations)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = {t: {n: pts for n, pts in series.items() if pts} for t, series in panels.items()}
    panels = {t: s for t, s in panels.items() if s} or {"no records yet": {}}
    fig = Figure(figsize=(width * len(panels), height), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (title, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        ys = [y for pts in series.values() for _, y in pts]
        for name, pts in series.items():
            xs, vs = zip(*pts)
            ax.plot(xs, vs, label=name, linewidth=1.4, marker="o" if len(pts) <= 30 else None, markersize=3.5)
        if ys and min(ys) > 0 and max(ys) > 10 * min(ys):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=8, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def strip_png(snapshots: "list[tuple[int, bytes]]", most: int = 8, side: float = 2.2) -> bytes:
    """A run's sample grids over time, left to right, each titled with its step (at most `most`,
    spread evenly over the run, the last always among them)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(snapshots) > most:
        picks = sorted({round(i * (len(snapshots) - 1) / (most - 1)) for i in range(most)})
        snapshots = [snapshots[i] for i in picks]
    fig = Figure(figsize=(side * max(len(snapshots), 1), side + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (step, png) in zip(fig.subplots(1, max(len(snapshots), 1), squeeze=False)[0], snapshots):
        with Image.open(io.BytesIO(png)) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_title(f"step {step}", fontsize=9)
        ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
