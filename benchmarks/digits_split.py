"""The benchmarks' digits: scikit-learn's 1797 8x8 digits cut once into train and test halves
(stratified, seed 0) and written as PNG class folders, so GANs train and classifiers read through
`data.name=images` exactly as a user's folders would; and `ganflow train` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_split(root: Path, per_class: int | None = None, seed: int = 0) -> Path:
    """root/train/<digit>/*.png (every train image, or `per_class` of each) and root/test/<digit>/*.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(0)  # the test half never changes with `seed`
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(bunch.target == digit))
        half = len(rows) // 2
        train = np.random.default_rng([seed, digit]).permutation(rows[:half])[:per_class]
        for split, picked in (("train", train), ("test", rows[half:])):
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in picked:
                pixels = (bunch.images[i] * (255 / 16)).round().astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def train_run(job: str, storage: Path, overrides: List[str]) -> str:
    """`ganflow train` in a subprocess (in-process Ray, W&B disabled); the run directory."""
    cmd = [sys.executable, "-m", "ganflow.cli", "train", str(ROOT / "jobs" / job), f"storage.uri={storage}",
           "tracking.wandb.mode=disabled", *overrides]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"ganflow train failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]
