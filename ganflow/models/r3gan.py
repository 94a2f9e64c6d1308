"""R3GAN (Huang et al., NeurIPS 2024): the modern baseline, a ResNeXt-style G and D without
normalisation layers, meant for `loss.name=rpgan` with R1 and R2 (`loss.r1_gamma = loss.r2_gamma`).

Each stage is a transition (G: the 4x4 generative basis, then 1x1 conv + 2x upsampling; D:
2x downsampling + 1x1 conv, then the 4x4 discriminative basis) and residual blocks of
1x1 conv (x2 channels) - lrelu - grouped 3x3 conv (16 channels a group) - lrelu - 1x1 conv back,
the last one initialised to zero and the others scaled by L^(-1/4) for L blocks in the network
(fix-up initialisation), so a fresh network is the identity around each block. Widths per
resolution follow the reference presets: 12 x ngf up to 32 px, halving above (ngf = 64: 768,
CIFAR-10 and FFHQ's 768 / 384 / 192 / 96), two blocks a stage, latent 64 in the presets.
Labels: an embedding concatenated to z in G, a projection of D's output in D, as the reference.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganflow.config import JobConfig, ModelConfig
from ganflow.config.load import fail
from ganflow.models.registry import register
from ganflow.models.stylegan2 import fir, upsample2d

LRELU_GAIN = math.sqrt(2 / (1 + 0.2**2))
BLOCKS_PER_STAGE, EXPANSION, GROUP_CHANNELS = 2, 2, 16


def widths(resolution: int, base: int) -> dict:
    """Stage resolution -> width: 12 x base up to 32 px, halving with each doubling above."""
    return {r: min(12 * base, 12 * base * 32 // r) for r in (2**i for i in range(2, int(math.log2(resolution)) + 1))}


def msr(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """N(0, gain^2 / fan_in) weights, zero bias (the reference's MSRInitializer)."""
    fan_in = layer.weight.shape[1] * layer.weight[0][0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class BiasedLReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2))), 0.2)


def conv(cin: int, cout: int, k: int = 1, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    return msr(nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, groups=groups, bias=False), gain)


class ResidualBlock(nn.Module):
    def __init__(self, ch: int, total_blocks: int):
        super().__init__()
        wide = ch * EXPANSION
        gain = LRELU_GAIN * total_blocks ** (-1 / (2 * 3 - 2))
        self.conv1 = conv(ch, wide, 1, gain=gain)
        self.conv2 = conv(wide, wide, 3, groups=wide // GROUP_CHANNELS, gain=gain)
        self.conv3 = conv(wide, ch, 1, gain=0.0)
        self.act1, self.act2 = BiasedLReLU(wide), BiasedLReLU(wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


class Upsample(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv(cin, cout) if cin != cout else None
        self.register_buffer("fir", fir(cout, 4), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2d(self.conv(x) if self.conv is not None else x, self.fir)


class Downsample(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv(cin, cout) if cin != cout else None
        self.register_buffer("fir", fir(cin), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.fir.to(x.dtype), stride=2, padding=1, groups=self.fir.shape[0])
        return self.conv(x) if self.conv is not None else x


class R3GANGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        self.nz, self.num_classes = nz, num_classes
        w = list(widths(resolution, ngf).values())
        total = BLOCKS_PER_STAGE * len(w)
        self.embed = msr(nn.Linear(num_classes, nz, bias=False)) if num_classes else None
        self.basis = nn.Parameter(torch.randn(w[0], 4, 4))
        self.basis_linear = msr(nn.Linear(nz * (2 if num_classes else 1), w[0], bias=False))
        stages = []
        for i, ch in enumerate(w):
            layers = [Upsample(w[i - 1], ch)] if i else []
            stages.append(nn.Sequential(*layers, *(ResidualBlock(ch, total) for _ in range(BLOCKS_PER_STAGE))))
        self.stages = nn.ModuleList(stages)
        self.out = conv(w[-1], channels)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed.weight.t()[y]], dim=1)  # the reference's one-hot through a linear layer
        x = self.basis[None] * self.basis_linear(z)[:, :, None, None]
        for stage in self.stages:
            x = stage(x)
        return self.out(x)


class R3GANDiscriminator(nn.Module):
    def __init__(self, ndf: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        w = list(reversed(list(widths(resolution, ndf).values())))  # widest last: resolution down to 4
        total = BLOCKS_PER_STAGE * len(w)
        self.extract = conv(channels, w[0])
        stages = []
        for i, ch in enumerate(w):
            blocks = [ResidualBlock(ch, total) for _ in range(BLOCKS_PER_STAGE)]
            stages.append(nn.Sequential(*blocks, Downsample(ch, w[i + 1])) if i + 1 < len(w) else nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        emb = w[-1] if num_classes else 0
        self.basis = msr(nn.Conv2d(w[-1], w[-1], 4, groups=w[-1], bias=False))  # the discriminative basis
        self.basis_linear = msr(nn.Linear(w[-1], emb or 1, bias=False))
        self.embed = msr(nn.Linear(num_classes, emb, bias=False), 1 / math.sqrt(emb)) if num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 4x4 feature map before the basis (anomaly scores compare images by it)."""
        x = self.extract(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.basis_linear(self.basis(self.features(x)).flatten(1))
        if self.embed is not None:
            x = (x * self.embed.weight.t()[y]).sum(dim=1, keepdim=True)
        return x.view(x.shape[0])


def check_r3gan(cfg: JobConfig) -> None:
    if cfg.data.resolution < 8:
        fail("data.resolution", f"model.name=r3gan needs at least 8 px, got {cfg.data.resolution}")
    for key in ("ngf", "ndf"):
        odd = [w for w in widths(cfg.data.resolution, getattr(cfg.model, key)).values() if w * EXPANSION % GROUP_CHANNELS]
        if odd:
            fail(f"model.{key}", f"gives r3gan stage widths {odd} at {cfg.data.resolution} px; its grouped convs need "
                                 f"multiples of {GROUP_CHANNELS // EXPANSION} (ngf/ndf = 64 at 256 px, 8 at 32 px are)")


@register("r3gan", data_kind="images", labels="if_labelled", check=check_r3gan)
def build_r3gan(cfg: ModelConfig, shape: tuple, num_classes: int):
    channels, resolution = shape[0], shape[-1]
    return (R3GANGenerator(cfg.nz, cfg.ngf, channels, resolution, num_classes),
            R3GANDiscriminator(cfg.ndf, channels, resolution, num_classes))
