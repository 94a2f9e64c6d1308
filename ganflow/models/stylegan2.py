"""StyleGAN2 (Karras et al. 2020) as StyleGAN2-ADA's PyTorch code defines it (config `stylegan2`):
a mapping network, modulated/demodulated convolutions with noise inputs, a skip generator, a
residual discriminator with minibatch standard deviation, equalised learning rates, style mixing,
truncation, and low precision in the highest-resolution blocks only with activations clamped.
Written from the paper and the reference's structure in plain torch (no custom CUDA ops); its
parameter counts equal the reference's (tests/models/test_model_zoo.py).

Widths: min(channel_base / resolution, channel_max) per block with channel_base = model.channel_base or 256 x ngf and
channel_max = 8 x ngf (ngf = 64: the reference's cbase 16384, cmax 512); D likewise from ndf.

Three departures, each for world-size invariance: noise and style mixing are drawn from the
`rand` the GAN step hands in (a function of seed, step and row), the minibatch-stddev groups are
consecutive rows (the reference strides them across the batch), and the truncation centre is the
mean w of 10,000 fixed latents, computed when asked for, instead of a buffer tracked in training.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganflow.config import JobConfig, ModelConfig
from ganflow.config.load import fail
from ganflow.core.batch import BatchPlan
from ganflow.models.registry import register

SQRT2 = math.sqrt(2)
D_MAPPING_LAYERS = 8  # the reference's D label mapping keeps the default depth
TRUNCATION_SAMPLES = 10000

_FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])
FILTER = (_FIR[:, None] * _FIR[None, :]) / _FIR.sum() ** 2  # the [1,3,3,1] low-pass of resampling


def lrelu(x: torch.Tensor, gain: float = 1.0, clamp: Optional[float] = None) -> torch.Tensor:
    x = F.leaky_relu(x, 0.2) * (SQRT2 * gain)
    return x.clamp(-clamp * gain, clamp * gain) if clamp is not None else x


def fir(channels: int, gain: float = 1.0) -> torch.Tensor:
    """The filter as a depthwise kernel for `channels` (a module buffer: a constant of fixed shape
    when traced for export)."""
    return (FILTER * gain).expand(channels, 1, 4, 4).clone()


def blur(x: torch.Tensor, k: torch.Tensor, pad: tuple) -> torch.Tensor:
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), k.to(x.dtype), groups=k.shape[0])


def upsample2d(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """2x with the FIR filter (zero insertion + [1,3,3,1]^2 x 4, `k` = fir(C, 4)): a strided transposed conv."""
    return F.conv_transpose2d(x, k.to(x.dtype), stride=2, padding=1, groups=k.shape[0])


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Equalised learning rate: weights N(0, 1)/lr_mult, scaled by lr_mult/sqrt(fan_in) when used."""

    def __init__(self, cin: int, cout: int, act: bool = False, bias_init: float = 0.0, lr_mult: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mult)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.act, self.weight_gain, self.bias_gain = act, lr_mult / math.sqrt(cin), lr_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.act else x


class Conv(nn.Module):
    """Equalised conv with optional lrelu, 2x FIR downsampling and clamping (StyleGAN2's Conv2dLayer)."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, act: bool = True, down: bool = False,
                 clamp: Optional[float] = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.act, self.down, self.clamp, self.k = act, down, clamp, k
        self.weight_gain = 1 / math.sqrt(cin * k * k)
        if down:
            self.register_buffer("fir", fir(cin), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down:
            x = blur(x, self.fir, (2, 2) if self.k == 3 else (1, 1))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.k // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        if self.act:
            return lrelu(x, gain, self.clamp)
        x = x * gain if gain != 1 else x
        return x.clamp(-self.clamp * gain, self.clamp * gain) if self.clamp is not None else x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (demodulated), optional 2x upsampling, noise, bias, lrelu."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool = False, clamp: Optional[float] = None):
        super().__init__()
        self.affine = FullyConnected(w_dim, cin, bias_init=1)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up, self.clamp, self.resolution = up, clamp, resolution
        if up:
            self.register_buffer("fir", fir(cout, 4), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, rand=None) -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight
        if x.dtype != torch.float32:  # keep the modulated weights in range in low precision (the reference's fix)
            weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
            styles = styles / styles.abs().amax(dim=1, keepdim=True)
        dcoefs = ((weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        x = x * styles.to(x.dtype)[:, :, None, None]
        if self.up:
            x = blur(F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2), self.fir, (1, 1))
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=1)
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
        r = self.resolution
        noise = rand.normal(1, r, r, device=x.device) if rand is not None else self.noise_const[None, None]
        x = x + (noise * self.noise_strength).to(x.dtype)
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None], 1.0, self.clamp)


class ToRGB(nn.Module):
    def __init__(self, cin: int, channels: int, w_dim: int, clamp: Optional[float] = None):
        super().__init__()
        self.affine = FullyConnected(w_dim, cin, bias_init=1)
        self.weight = nn.Parameter(torch.randn(channels, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain, self.clamp = 1 / math.sqrt(cin), clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles.to(x.dtype)[:, :, None, None], self.weight.to(x.dtype)) + self.bias.to(x.dtype)[None, :, None, None]
        return x.clamp(-self.clamp, self.clamp) if self.clamp is not None else x


class SynthesisBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, channels: int, clamp: Optional[float]):
        super().__init__()
        self.resolution, self.low = resolution, False
        if cin == 0:
            self.const = nn.Parameter(torch.randn(cout, resolution, resolution))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(cin, cout, w_dim, resolution, up=True, clamp=clamp)
        self.conv1 = SynthesisLayer(cout, cout, w_dim, resolution, clamp=clamp)
        self.torgb = ToRGB(cout, channels, w_dim, clamp)
        self.num_conv = 1 if cin == 0 else 2
        self.register_buffer("fir", fir(channels, 4), persistent=False)

    def forward(self, x, img, ws, rand=None, dtype=torch.float32):
        dtype = dtype if self.low else torch.float32
        i = 0
        if self.conv0 is None:
            x = self.const.to(dtype)[None].expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], rand)
            i = 1
        x = self.conv1(x, ws[:, i], rand)
        y = self.torgb(x, ws[:, i + 1]).float()
        img = upsample2d(img, self.fir) + y if img is not None else y
        return x, img


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, w_dim: int, layers: int):
        super().__init__()
        self.embed = FullyConnected(num_classes, w_dim) if num_classes else None
        dims = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.fcs = nn.ModuleList(FullyConnected(a, b, act=True, lr_mult=0.01) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> torch.Tensor:
        parts = [] if z is None else [normalize_2nd_moment(z.float())]
        if self.embed is not None:  # the reference's one-hot label through a linear layer, as a row lookup
            e = self.embed
            label = (e.weight.t()[y] * e.weight_gain + e.bias * e.bias_gain)
            parts.append(normalize_2nd_moment(label))
        x = torch.cat(parts, dim=1)
        for fc in self.fcs:
            x = fc(x)
        return x


class StyleGAN2Generator(nn.Module):
    random_inputs = True  # takes `rand` (noise, style mixing) from the GAN step

    def __init__(self, nz: int, ngf: int, channels: int, resolution: int, num_classes: int = 0, mapping_layers: int = 8,
                 style_mixing: float = 0.9, fp16_res: int = 4, conv_clamp: Optional[float] = 256.0,
                 channel_base: Optional[int] = None):
        super().__init__()
        self.nz, self.num_classes, self.style_mixing = nz, num_classes, style_mixing
        base, cmax = channel_base or 256 * ngf, 8 * ngf
        width = {r: min(base // r, cmax) for r in (2**i for i in range(2, int(math.log2(resolution)) + 1))}
        low_from = max(2 ** (int(math.log2(resolution)) + 1 - fp16_res), 8)
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for r, c in width.items():
            block = SynthesisBlock(width[r // 2] if r > 4 else 0, c, nz, r, channels, conv_clamp)
            block.low = fp16_res > 0 and r >= low_from
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's toRGB
        self.mapping = MappingNetwork(nz, num_classes, nz, mapping_layers)
        self.dtype = torch.float32

    def set_precision(self, dtype: Optional[torch.dtype]) -> None:
        """train.precision, for the highest-resolution blocks only."""
        self.dtype = dtype or torch.float32

    def styles(self, z: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        return self.mapping(z, y).unsqueeze(1).repeat(1, self.num_ws, 1)

    @torch.no_grad()
    def mean_w(self, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The truncation centre: mean w of 10,000 fixed latents (with random labels if conditional)."""
        g = torch.Generator().manual_seed(0x7C)
        z = torch.randn(TRUNCATION_SAMPLES, self.nz, generator=g)
        labels = torch.randint(self.num_classes, (TRUNCATION_SAMPLES,), generator=g) if self.num_classes else None
        device = self.blocks[0].const.device
        return self.mapping(z.to(device), labels.to(device) if labels is not None else None).mean(0)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None, rand=None, truncation: float = 1.0,
                return_ws: bool = False, noise=None):
        """`rand`: training's draws (noise and style mixing, `core.rng.RowRandom`); `noise`: noise
        alone (`core.rng.SampleNoise`, what sampling and evaluation pass); neither: the constant noise."""
        ws = self.styles(z, y)
        if rand is not None and self.style_mixing > 0:  # the draws happen whether or not this batch mixes
            cutoff = rand.randint(1, self.num_ws)
            mix = rand.uniform() < self.style_mixing
            z2 = rand.normal(z.shape[1], device=z.device)
            if mix:
                ws = torch.cat([ws[:, :cutoff], self.styles(z2, y)[:, cutoff:]], dim=1)
        if truncation != 1.0:
            ws = torch.lerp(self.mean_w().to(ws.dtype), ws, truncation)
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i:i + block.num_conv + 1], noise if noise is not None else rand, self.dtype)
            i += block.num_conv
        return (img, ws) if return_ws else img


class DiscriminatorBlock(nn.Module):
    def __init__(self, cin: int, tmp: int, cout: int, channels: int, clamp: Optional[float]):
        super().__init__()
        self.fromrgb = Conv(channels, tmp, 1, clamp=clamp) if cin == 0 else None
        self.conv0 = Conv(tmp, tmp, 3, clamp=clamp)
        self.conv1 = Conv(tmp, cout, 3, down=True, clamp=clamp)
        self.skip = Conv(tmp, cout, 1, bias=False, act=False, down=True)
        self.low = False

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        dtype = dtype if self.low else torch.float32
        if self.fromrgb is not None:
            x = self.fromrgb(img.to(dtype))
        x = x.to(dtype)
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class MinibatchStd(nn.Module):
    """Per group of consecutive rows, the mean standard deviation over features, as one more channel."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(self.group, n)
        y = x.reshape(-1, g, 1, c, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (n/g, 1)
        y = y.reshape(-1, 1, 1, 1, 1).expand(-1, g, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(nn.Module):
    def __init__(self, ndf: int, channels: int, resolution: int, num_classes: int = 0, mbstd_group: int = 4,
                 fp16_res: int = 4, conv_clamp: Optional[float] = 256.0, channel_base: Optional[int] = None):
        super().__init__()
        self.num_classes = num_classes
        base, cmax = channel_base or 256 * ndf, 8 * ndf
        log2 = int(math.log2(resolution))
        width = {r: min(base // r, cmax) for r in (2**i for i in range(2, log2 + 1))}
        low_from = max(2 ** (log2 + 1 - fp16_res), 8)
        self.blocks = nn.ModuleList()
        for r in (2**i for i in range(log2, 2, -1)):
            block = DiscriminatorBlock(width[r] if r < resolution else 0, width[r], width[r // 2], channels, conv_clamp)
            block.low = fp16_res > 0 and r >= low_from
            self.blocks.append(block)
        c4 = width[4]
        self.cmap_dim = c4 if num_classes else 0
        self.mapping = MappingNetwork(0, num_classes, c4, D_MAPPING_LAYERS) if num_classes else None
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = Conv(c4 + 1, c4, 3, clamp=conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, act=True)
        self.out = FullyConnected(c4, self.cmap_dim or 1)
        self.dtype = torch.float32

    def set_precision(self, dtype: Optional[torch.dtype]) -> None:
        self.dtype = dtype or torch.float32

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """The 4x4 feature map before the batch statistics (anomaly scores compare images by it)."""
        x = None
        for block in self.blocks:
            x = block(x, img, self.dtype)
        return x.float()

    def forward(self, img: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.conv(self.mbstd(self.features(img)))
        x = self.out(self.fc(x.flatten(1)))
        if self.mapping is not None:
            cmap = self.mapping(None, y)
            return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)
        return x.squeeze(1)


def check_stylegan2(cfg: JobConfig) -> None:
    r, m = cfg.data.resolution, cfg.model
    if r < 8:
        fail("data.resolution", f"model.name=stylegan2 needs at least 8 px, got {r}")
    for n in cfg.scaling.sizes():
        rows = BatchPlan.of(cfg.train, n).part_rows  # what one D forward sees
        if rows % m.mbstd_group:
            what = "train.batch_per_worker" if cfg.train.batch_per_worker else f"train.batch_size / {n} worker(s)"
            fail("model.mbstd_group", f"must divide each worker's batch ({rows} = {what}), "
                                      f"so the groups are the same for any number of workers; got {m.mbstd_group}")


@register("stylegan2", data_kind="images", labels="if_labelled", d_reg_every=16, g_reg_every=4, pl_weight=2.0,
          styles=True, check=check_stylegan2)
def build_stylegan2(cfg: ModelConfig, shape: tuple, num_classes: int):
    channels, resolution = shape[0], shape[-1]
    G = StyleGAN2Generator(cfg.nz, cfg.ngf, channels, resolution, num_classes, cfg.mapping_layers, cfg.style_mixing,
                           cfg.fp16_res, cfg.conv_clamp, cfg.channel_base)
    D = StyleGAN2Discriminator(cfg.ndf, channels, resolution, num_classes, cfg.mbstd_group, cfg.fp16_res, cfg.conv_clamp,
                               cfg.channel_base)
    return G, D
