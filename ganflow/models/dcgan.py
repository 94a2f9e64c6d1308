"""DCGAN (Radford et al. 2015) and its class-conditional variant with a projection
discriminator (Miyato & Koyama 2018).

G: z -> 4x4 by a transposed conv, then stride-2 transposed convs doubling the side and halving
the width until `resolution`, tanh out. D mirrors it with stride-2 convs down to 4x4.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganflow.config import ModelConfig
from ganflow.models.registry import register


def _widths(base: int, resolution: int) -> list:
    """Channel widths at 4x4, 8x8, ..., resolution/2 (widest first)."""
    n = int(math.log2(resolution)) - 2  # number of resolution doublings
    return [base * 2 ** (n - 1 - i) for i in range(n)]


def _norm(kind: str, ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch) if kind == "batch" else nn.Identity()


def dcgan_init(m: nn.Module) -> None:
    """N(0, 0.02) weights, as in the DCGAN paper."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation on every weight layer, after init (SN reparametrises `weight`)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int, channels: int, resolution: int, norm: str = "batch", num_classes: int = 0):
        super().__init__()
        self.nz, self.num_classes = nz, num_classes
        w = _widths(ngf, resolution)
        # Label embedding concatenated to z: the conditional G of Mirza & Osindero, embedded.
        self.embed = nn.Embedding(num_classes, nz) if num_classes else None
        in_dim = nz * 2 if num_classes else nz
        layers = [nn.ConvTranspose2d(in_dim, w[0], 4, 1, 0, bias=norm != "batch"), _norm(norm, w[0]), nn.ReLU(True)]
        for a, b in zip(w[:-1], w[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=norm != "batch"), _norm(norm, b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(w[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Without classes: the DCGAN D. With classes: logit = psi(phi(x)) + <embed(y), phi(x)>."""

    def __init__(self, ndf: int, channels: int, resolution: int, norm: str = "batch", sn: bool = False, num_classes: int = 0):
        super().__init__()
        w = list(reversed(_widths(ndf, resolution)))  # narrowest first
        layers = [nn.Conv2d(channels, w[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]  # no norm on the input layer
        for a, b in zip(w[:-1], w[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=norm != "batch"), _norm(norm, b), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)  # -> (B, w[-1], 4, 4)
        self.num_classes = num_classes
        if num_classes:
            self.head = nn.Linear(w[-1], 1)
            self.embed = nn.Embedding(num_classes, w[-1])
        else:
            self.head = nn.Conv2d(w[-1], 1, 4, 1, 0)
        self.apply(dcgan_init)
        if sn:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        if not self.num_classes:
            return self.head(h).flatten()
        h = h.sum(dim=(2, 3))  # global sum pooling, as in the projection discriminator
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


@register("dcgan", data_kind="images")
def build_dcgan(cfg: ModelConfig, shape: tuple, num_classes: int):
    channels, resolution = shape[0], shape[-1]
    G = DCGANGenerator(cfg.nz, cfg.ngf, channels, resolution, cfg.g_norm, num_classes)
    D = DCGANDiscriminator(cfg.ndf, channels, resolution, cfg.d_norm, cfg.spectral_norm, num_classes)
    return G, D


@register("cdcgan", data_kind="images", labels="required")
def build_cdcgan(cfg: ModelConfig, shape: tuple, num_classes: int):
    if num_classes < 2:
        raise ValueError("cdcgan needs a labelled data set with at least two classes")
    return build_dcgan(cfg, shape, num_classes)
