"""Does a conditional GAN's synthetic data help a classifier that has few labelled images?

A cDCGAN (jobs/cdcgan_digits.yaml) trains on K labelled train-half digits per class and nothing
else; `ganflow synth` writes S images per class from it; a small CNN then trains on the K real
images per class, on those plus the synthetic ones, and on the synthetic ones alone, and is
scored on the test half (901 digits it never saw). Mean and spread over 5 classifier seeds.
Everything is read back through `data.name=images`, as a user's folders would be.

    python benchmarks/augmentation.py [--per-class 20] [--synthetic 100] [--steps 8000] [--run RUN]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.digits_split import train_run, write_split  # noqa: E402
from ganflow.config import DataConfig  # noqa: E402
from ganflow.data import build_dataset  # noqa: E402


def read(folder: Path):
    ds = build_dataset(DataConfig(name="images", path=str(folder), resolution=32, channels=1))
    assert ds.classes == [str(d) for d in range(10)], ds.classes
    return ds.x, ds.y


def classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 16, 10))


def accuracy(x, y, test_x, test_y, seed: int, steps: int = 600) -> float:
    torch.manual_seed(seed)
    net = classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()  # the usual cheap augmentation, for every variant
        batch = torch.roll(x[idx], shifts=shift, dims=(2, 3))
        loss = nn.functional.cross_entropy(net(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return (net(test_x).argmax(1) == test_y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=20, help="labelled real images per class (K)")
    p.add_argument("--synthetic", type=int, default=100, help="synthetic images per class (S)")
    p.add_argument("--steps", type=int, default=8000, help="GAN training steps")
    p.add_argument("--run", default=None, help="reuse a cDCGAN run trained on the same K-per-class split")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ganflow-augment-"))
    split = write_split(scratch / "digits", per_class=args.per_class)
    run = args.run
    if run is None:
        started = time.perf_counter()
        run = train_run("cdcgan_digits.yaml", scratch / "runs", [
            "data.name=images", f"data.path={split / 'train'}", "data.channels=1", "train.augment=translation",
            f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}", f"train.sample_every={args.steps}"])
        print(f"cDCGAN on {10 * args.per_class} labelled digits: {run} ({time.perf_counter() - started:.0f} s)")
    synth = scratch / "synth"
    subprocess.run([sys.executable, "-m", "ganflow.cli", "synth", run, "--per-class", str(args.synthetic),
                    "--out", str(synth)], check=True, capture_output=True)
    real_x, real_y = read(split / "train")
    fake_x, fake_y = read(synth)
    test_x, test_y = read(split / "test")
    variants = {
        f"{args.per_class} real/class": (real_x, real_y),
        f"{args.per_class} real + {args.synthetic} synthetic/class": (torch.cat([real_x, fake_x]), torch.cat([real_y, fake_y])),
        f"{args.synthetic} synthetic/class only": (fake_x, fake_y),
    }
    print(f"test half: {len(test_x)} digits; accuracy over {args.seeds} classifier seeds")
    for name, (x, y) in variants.items():
        accs = [accuracy(x, y, test_x, test_y, seed) for seed in range(args.seeds)]
        print(f"{name:>36}: {np.mean(accs):.3f} +- {np.std(accs):.3f}  ({', '.join(f'{a:.3f}' for a in accs)})", flush=True)


if __name__ == "__main__":
    main()
