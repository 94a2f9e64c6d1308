"""`ganflow sample`: samples of a generator rebuilt from a checkpoint alone.

.npz: float32 `images` (N, C, H, W) in [-1, 1] (+ int64 `labels` for conditional models), or
float32 `samples` (N, 2) for 2D models. .png: a grid (images) or a scatter plot (2D).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganflow import models
from ganflow.commands.common import RUN_ERRORS, die, load_generator
from ganflow.core.sampling import SampleError, generate
from ganflow.present.pictures import grid_png, scatter_png
from ganflow.store.atomic import write_atomic


def sample_to_file(run: str | Path, num: int, out: Path, seed: int = 0, label: Optional[int] = None,
                   truncation: Optional[float] = None, noise: str = "random") -> Path:
    if num <= 0:
        raise SampleError(f"--num: must be > 0, got {num}")
    if truncation is not None and not 0 <= truncation <= 1:
        raise SampleError(f"--truncation: psi must be in [0, 1] (1: none, 0: the mean style), got {truncation}")
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".png"):
        raise SampleError(f"--out: {out} must end in .npz or .png")
    loaded = load_generator(run)
    G, meta = loaded.G, loaded.meta
    name = loaded.config.model.name
    if truncation is not None and not models.spec(name).styles:
        with_styles = sorted(n for n, s in models.MODELS.items() if s.styles)
        raise SampleError(f"--truncation: model.name={name} has no style space to truncate ({' or '.join(with_styles)} has); "
                          "`ganflow synth --truncation T` redraws latents beyond +-T for any model")
    x, y = generate(G, num, seed, label, truncation=truncation, noise=noise)
    if suffix == ".png":
        centers = torch.tensor(meta.centers) if meta.centers else None
        data = scatter_png(x, centers) if x.dim() == 2 else grid_png(x)
    else:
        arrays = {"samples": x.numpy().astype(np.float32)} if x.dim() == 2 else {"images": x.numpy().astype(np.float32)}
        if y is not None:
            arrays["labels"] = y.numpy().astype(np.int64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    write_atomic(out, data)
    return out


def main(args: argparse.Namespace) -> int:
    try:
        path = sample_to_file(args.run, args.num, Path(args.out), seed=args.seed, label=args.label,
                              truncation=args.truncation, noise=args.noise)
    except RUN_ERRORS as err:
        return die(str(err))
    print(path)
    return 0
