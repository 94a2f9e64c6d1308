"""A local folder of PNG/JPEG images; class subfolders, when every image sits in one, become labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganflow.config import ConfigError, DataConfig
from ganflow.data import Dataset, register

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _load(path: Path, resolution: int, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        side = min(w, h)  # centre crop to a square, then resize
        im = im.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
        im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


@register("images")
def images(cfg: DataConfig, seed: int) -> Dataset:
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise ConfigError(f"data.path: {str(root)!r} is not a directory of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"data.path: no .png/.jpg/.jpeg files under {str(root)!r}")
    channels = cfg.channels or 3
    classes = sorted({p.parent.name for p in files if p.parent != root})
    labelled = classes and all(p.parent != root for p in files)
    x = torch.from_numpy(np.stack([_load(p, cfg.resolution, channels) for p in files]))
    x = x.float() / 127.5 - 1
    if not labelled:
        return Dataset(x=x)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[p.parent.name] for p in files], dtype=torch.long)
    return Dataset(x=x, y=y, num_classes=len(classes))
