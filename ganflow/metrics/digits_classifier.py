"""A small CNN trained on scikit-learn's digits: the domain feature extractor for digits runs,
so they get a meaningful Frechet distance and class coverage on a CPU, offline.

Retrain the shipped weights with `python -m ganflow.metrics.digits_classifier` (about a minute).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = Path(__file__).with_name("digits_classifier.safetensors")
RESOLUTION = 32


class DigitsClassifier(nn.Module):
    def __init__(self, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16
            nn.Conv2d(width, width * 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8
            nn.Conv2d(width * 2, width * 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),  # 2
            nn.Flatten(), nn.Linear(width * 8, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """Any (N, C, H, W) in [-1, 1] -> grey 32x32."""
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != RESOLUTION:
            x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_digits_classifier(path: Path = WEIGHTS) -> DigitsClassifier:
    model = DigitsClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def digits_split(seed: int = 0):
    """(x_train, y_train, x_test, y_test) at 32x32 in [-1, 1]; a fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False).clamp(0, 1) * 2 - 1
    y = torch.from_numpy(bunch.target).long()
    tr, te = train_test_split(torch.arange(len(y)).numpy(), test_size=0.25, random_state=seed, stratify=y.numpy())
    return x[tr], y[tr], x[te], y[te]


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=g).tolist()
    return torch.roll(x, shifts=(dx, dy), dims=(2, 3))


def train_classifier(epochs: int = 30, seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = digits_split(seed)
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(_shift(x_tr[idx], g)), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    return model, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    model, acc = train_classifier(args.epochs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    print(f"test accuracy {acc:.4f}; saved {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
