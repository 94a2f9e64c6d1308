"""The SNGAN/BigGAN ResNet family (Miyato et al. 2018; Brock et al. 2019), 16-256 px.

G: a linear layer to 4x4, residual up-blocks (BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, 1x1 shortcut),
BN-ReLU-conv3x3-tanh out. On labelled data its batch norms are conditional: gains and biases come
from a class embedding shared by every block (BigGAN), with a chunk of z beside it when
`model.hierarchical`. D: residual down-blocks with spectral norm on every layer, ReLU, global sum
pooling, a linear head and, on labelled data, the projection <embed(y), h> (Miyato & Koyama 2018).

Widths per resolution, in multiples of `model.ngf`/`model.ndf`, follow the reference configs: at
32 px and below SNGAN's CIFAR net (G 4 x ngf = 256, D 2 x ndf = 128 everywhere), above it
BigGAN-PyTorch's G_arch/D_arch tables.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganflow.config import JobConfig, ModelConfig
from ganflow.config.load import fail
from ganflow.models.dcgan import apply_spectral_norm
from ganflow.models.registry import register

SHARED_DIM = 128  # BigGAN's shared class-embedding size

# resolution -> (G in/out widths per up-block, D in/out widths per block, D downsamples), x ngf / ndf
BIGGAN = {
    64: ([16, 16, 8, 4], [16, 8, 4, 2], [1, 2, 4, 8], [1, 2, 4, 8, 16], [True] * 4 + [False]),
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1], [1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16], [True] * 5 + [False]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1], [1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [True] * 6 + [False]),
}


def architecture(resolution: int, ngf: int, ndf: int) -> dict:
    """Widths of every block, and the resolution each block's output has."""
    if resolution in BIGGAN:
        g_in, g_out, d_in, d_out, down = BIGGAN[resolution]
        g_in, g_out = [m * ngf for m in g_in], [m * ngf for m in g_out]
        d_in, d_out = [m * ndf for m in d_in], [m * ndf for m in d_out]
    else:  # SNGAN's CIFAR net, and its smaller versions (16 px: one up-block fewer)
        n = int(math.log2(resolution)) - 2
        g_in = g_out = [4 * ngf] * n
        down = [True] * (n - 1) + [False, False]
        d_out = [2 * ndf] * (n + 1)
        d_in = d_out[:-1]
    d_res, r = [], resolution
    for is_down in down:
        r = r // 2 if is_down else r
        d_res.append(r)
    return {"g_in": g_in, "g_out": g_out, "g_res": [8 * 2**i for i in range(len(g_out))],
            "d_in": d_in, "d_out": d_out, "d_down": down, "d_res": d_res}


class ConditionalNorm(nn.Module):
    """BatchNorm; conditional (gain 1 + W c, bias W' c from the class/latent vector c) when `cond_dim`."""

    def __init__(self, channels: int, cond_dim: int = 0, norm: str = "batch"):
        super().__init__()
        self.cond_dim = cond_dim
        if norm == "none":
            self.bn = nn.Identity()
        else:
            self.bn = nn.BatchNorm2d(channels, affine=not cond_dim)
        if cond_dim:
            self.gain = nn.Linear(cond_dim, channels, bias=False)
            self.bias = nn.Linear(cond_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.bn(x)
        if self.cond_dim:
            x = x * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]
        return x


class Attention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019) as in BigGAN: keys and values max-pooled 2x, gamma from 0."""

    def __init__(self, ch: int):
        super().__init__()
        self.theta = nn.Conv2d(ch, ch // 8, 1, bias=False)
        self.phi = nn.Conv2d(ch, ch // 8, 1, bias=False)
        self.g = nn.Conv2d(ch, ch // 2, 1, bias=False)
        self.o = nn.Conv2d(ch // 2, ch, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, *_) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)
        g = F.max_pool2d(self.g(x), 2).flatten(2)
        beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (b, hw, hw/4)
        o = self.o((g @ beta.transpose(1, 2)).view(b, c // 2, h, w))
        return x + self.gamma * o


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, norm: str):
        super().__init__()
        self.b1, self.b2 = ConditionalNorm(cin, cond_dim, norm), ConditionalNorm(cout, cond_dim, norm)
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1)  # always learnable: every G block upsamples
        for conv in (self.c1, self.c2):
            nn.init.xavier_uniform_(conv.weight, math.sqrt(2))
        nn.init.xavier_uniform_(self.sc.weight)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        h = F.interpolate(F.relu(self.b1(x, c)), scale_factor=2)
        h = self.c2(F.relu(self.b2(self.c1(h), c)))
        return h + self.sc(F.interpolate(x, scale_factor=2))


class DBlock(nn.Module):
    """`first`: SNGAN's optimised block (conv before ReLU, pooled shortcut first) for the image input."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool):
        super().__init__()
        self.down, self.first = down, first
        self.c1, self.c2 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else None
        for conv in (self.c1, self.c2):
            nn.init.xavier_uniform_(conv.weight, math.sqrt(2))
        if self.sc is not None:
            nn.init.xavier_uniform_(self.sc.weight)

    def forward(self, x: torch.Tensor, *_) -> torch.Tensor:
        h = self.c1(x if self.first else F.relu(x))
        h = self.c2(F.relu(h))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.sc(F.avg_pool2d(s, 2))
        elif self.sc is not None:
            s = self.sc(s)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int, channels: int, resolution: int, num_classes: int = 0, norm: str = "batch",
                 attention: Optional[int] = None, hierarchical: bool = False):
        super().__init__()
        self.nz, self.num_classes = nz, num_classes
        arch = architecture(resolution, ngf, ngf)
        n = len(arch["g_out"])
        self.hierarchical = hierarchical and bool(num_classes)
        self.z_chunk = nz // (n + 1) if self.hierarchical else 0  # BigGAN: one chunk for the linear, one per block
        cond_dim = (SHARED_DIM + self.z_chunk) if num_classes else 0
        self.shared = nn.Embedding(num_classes, SHARED_DIM) if num_classes else None
        first = arch["g_in"][0]
        self.linear = nn.Linear(nz - n * self.z_chunk, first * 16)
        nn.init.xavier_uniform_(self.linear.weight)
        self.blocks = nn.ModuleList()
        for cin, cout, res in zip(arch["g_in"], arch["g_out"], arch["g_res"]):
            self.blocks.append(GBlock(cin, cout, cond_dim, norm))
            if attention == res:
                self.blocks.append(Attention(cout))
        self.out_norm = nn.BatchNorm2d(arch["g_out"][-1]) if norm == "batch" else nn.Identity()
        self.out = nn.Conv2d(arch["g_out"][-1], channels, 3, 1, 1)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        chunks: List[Optional[torch.Tensor]]
        if self.hierarchical:
            n = sum(isinstance(b, GBlock) for b in self.blocks)
            z, *rest = torch.split(z, [z.shape[1] - n * self.z_chunk] + [self.z_chunk] * n, dim=1)
            shared = self.shared(y)
            chunks = [torch.cat([shared, r], 1) for r in rest]
        else:
            c = self.shared(y) if self.shared is not None else None
            chunks = [c] * len(self.blocks)
        h = self.linear(z).view(z.shape[0], -1, 4, 4)
        i = 0
        for block in self.blocks:
            if isinstance(block, GBlock):
                h = block(h, chunks[i])
                i += 1
            else:
                h = block(h)
        return torch.tanh(self.out(F.relu(self.out_norm(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, ndf: int, channels: int, resolution: int, num_classes: int = 0, attention: Optional[int] = None):
        super().__init__()
        self.num_classes = num_classes
        arch = architecture(resolution, ndf, ndf)
        self.blocks = nn.ModuleList()
        d_in = [channels] + arch["d_out"][:-1]
        for i, (cin, cout, down, res) in enumerate(zip(d_in, arch["d_out"], arch["d_down"], arch["d_res"])):
            self.blocks.append(DBlock(cin, cout, down, first=i == 0))
            if attention == res and i < len(d_in) - 1:
                self.blocks.append(Attention(cout))
        width = arch["d_out"][-1]
        self.head = nn.Linear(width, 1)
        nn.init.xavier_uniform_(self.head.weight)
        self.embed = nn.Embedding(num_classes, width) if num_classes else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)
        apply_spectral_norm(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (anomaly scores compare images by it)."""
        for block in self.blocks:
            x = block(x)
        return F.relu(x)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))  # global sum pooling
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


def check_resnet(cfg: JobConfig) -> None:
    r, m = cfg.data.resolution, cfg.model
    if r < 16 or r > 256:
        fail("data.resolution", f"model.name=resnet covers 16-256 px, got {r}")
    if m.attention is not None and not 8 <= m.attention <= r // 2:
        fail("model.attention", f"must be a block resolution between 8 and {r // 2} for {r} px, or null; got {m.attention}")


@register("resnet", data_kind="images", labels="if_labelled", check=check_resnet)
def build_resnet(cfg: ModelConfig, shape: tuple, num_classes: int):
    channels, resolution = shape[0], shape[-1]
    G = ResNetGenerator(cfg.nz, cfg.ngf, channels, resolution, num_classes, cfg.g_norm, cfg.attention, cfg.hierarchical)
    D = ResNetDiscriminator(cfg.ndf, channels, resolution, num_classes, cfg.attention)
    return G, D
