"""MLP generator and discriminator for 2D data (the ring/grid mode-coverage benchmarks)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganflow.config import ModelConfig
from ganflow.models.registry import register


def _mlp(sizes: list, act: nn.Module, sn: bool = False) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(spectral_norm(nn.Linear(a, b)) if sn else nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act)
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    num_classes = 0

    def __init__(self, nz: int, hidden: int, layers: int, out_dim: int = 2):
        super().__init__()
        self.nz = nz
        self.net = _mlp([nz] + [hidden] * layers + [out_dim], nn.ReLU())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, hidden: int, layers: int, in_dim: int = 2, sn: bool = False):
        super().__init__()
        self.net = _mlp([in_dim] + [hidden] * layers + [1], nn.LeakyReLU(0.2), sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(1)


@register("mlp", data_kind="points")
def build(cfg: ModelConfig, shape: tuple, num_classes: int):
    G = MLPGenerator(cfg.nz, cfg.hidden, cfg.layers, shape[0])
    D = MLPDiscriminator(cfg.hidden, cfg.layers, shape[0], cfg.spectral_norm)
    return G, D
