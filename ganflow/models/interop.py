"""Reference implementations' parameter names onto ganflow's modules: the one documented key map,
used by the golden tests (tests/models/test_golden.py) and by importing official weights.

StyleGAN2-ADA (NVlabs/stylegan2-ada-pytorch, training/networks.py) names blocks by resolution
(`synthesis.b16`, D's `b16` ... `b4`); ganflow numbers them (G from 4 px up, D from the image
down), keeps D's 4x4 epilogue at the top level and its mapping layers in a list. The reference's
`resample_filter` buffers are constants ganflow rebuilds; `mapping.w_avg` (its truncation centre,
tracked in training) has no counterpart: ganflow computes the centre when asked for.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List

from torch import Tensor

_DROPPED = re.compile(r"(^|\.)resample_filter$|^mapping\.w_avg$")


def _mapping(key: str) -> str:
    return re.sub(r"^mapping\.fc(\d+)\.", r"mapping.fcs.\1.", key)


def stylegan2_generator_state(ref: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """A StyleGAN2-ADA Generator's state dict in ganflow's StyleGAN2Generator names."""
    out = {}
    for key, value in ref.items():
        if _DROPPED.search(key):
            continue
        m = re.match(r"^synthesis\.b(\d+)\.(.+)$", key)
        out[f"blocks.{int(math.log2(int(m.group(1)))) - 2}.{m.group(2)}" if m else _mapping(key)] = value
    return out


def stylegan2_discriminator_state(ref: Dict[str, Tensor], resolution: int) -> Dict[str, Tensor]:
    """A StyleGAN2-ADA Discriminator's state dict in ganflow's StyleGAN2Discriminator names."""
    out, top = {}, int(math.log2(resolution))
    for key, value in ref.items():
        if _DROPPED.search(key):
            continue
        m = re.match(r"^b(\d+)\.(.+)$", key)
        if m and m.group(1) == "4":
            key = m.group(2)  # the epilogue: conv, fc, out
        elif m:
            key = f"blocks.{top - int(math.log2(int(m.group(1))))}.{m.group(2)}"
        out[_mapping(key)] = value
    return out


class InteropError(ValueError):
    """Reference networks that ganflow's modules cannot represent (named, with the value)."""


def stylegan2_overrides(g: Dict[str, Any], d: Dict[str, Any]) -> List[str]:
    """Job overrides that build ganflow's StyleGAN2 pair in the shape of a StyleGAN2-ADA pair, from
    their init kwargs (the reference's defaults where a pickle leaves them out)."""
    absent = [k for k in ("z_dim", "w_dim", "img_resolution", "img_channels") if not isinstance(g.get(k), int)]
    if absent:
        raise InteropError(f"G's init kwargs lack {', '.join(absent)}: not a StyleGAN2-ADA Generator")
    syn, mapping, epilogue = g.get("synthesis_kwargs") or {}, g.get("mapping_kwargs") or {}, d.get("epilogue_kwargs") or {}
    checks = [
        ("z_dim", g.get("z_dim"), g.get("w_dim"), "ganflow's StyleGAN2 has w_dim = z_dim (model.nz)"),
        ("synthesis_kwargs.architecture", syn.get("architecture", "skip"), "skip", "ganflow's G is the skip architecture"),
        ("D.architecture", d.get("architecture", "resnet"), "resnet", "ganflow's D is the residual architecture"),
        ("D.channel_base", d.get("channel_base", 32768), syn.get("channel_base", 32768), "one model.channel_base serves G and D"),
        ("D.mapping_kwargs.num_layers", (d.get("mapping_kwargs") or {}).get("num_layers", 8), 8, "ganflow's D maps labels in 8 layers"),
        ("D.epilogue_kwargs.mbstd_num_channels", epilogue.get("mbstd_num_channels", 1), 1, "ganflow's minibatch stddev adds one channel"),
    ]
    for name, got, want, why in checks:
        if got != want:
            raise InteropError(f"{name}={got!r}: {why} ({want!r})")
    for key, cmax in (("synthesis_kwargs.channel_max", syn.get("channel_max", 512)), ("D.channel_max", d.get("channel_max", 512))):
        if cmax % 8:
            raise InteropError(f"{key}={cmax}: must be a multiple of 8 (model.ngf/ndf = channel_max / 8)")
    clamp = syn.get("conv_clamp")
    return ["model.name=stylegan2", f"model.nz={g['z_dim']}", f"model.ngf={syn.get('channel_max', 512) // 8}",
            f"model.ndf={d.get('channel_max', 512) // 8}", f"model.channel_base={syn.get('channel_base', 32768)}",
            f"model.mapping_layers={mapping.get('num_layers', 8)}", f"model.fp16_res={syn.get('num_fp16_res', 0)}",
            f"model.conv_clamp={'null' if clamp is None else clamp}", f"model.mbstd_group={epilogue.get('mbstd_group_size', 4)}",
            f"data.resolution={g['img_resolution']}", f"data.channels={g['img_channels']}"]


def _r3gan_block(rest: str) -> str:
    """A residual block's parameter: LinearLayerN.Layer.weight -> convN.weight, NonLinearityN.Bias -> actN.bias."""
    rest = re.sub(r"^LinearLayer(\d)\.Layer\.weight$", r"conv\1.weight", rest)
    return re.sub(r"^NonLinearity(\d)\.Bias$", r"act\1.bias", rest)


def r3gan_generator_state(ref: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An R3GAN (brownvc/R3GAN, R3GAN/Networks.py) Generator's state dict in ganflow's names: stage 0
    is the generative basis then blocks; later stages an upsampling transition then blocks."""
    fixed = {"EmbeddingLayer.weight": "embed.weight", "AggregationLayer.Layer.weight": "out.weight",
             "MainLayers.0.Layers.0.Basis": "basis", "MainLayers.0.Layers.0.LinearLayer.weight": "basis_linear.weight"}
    out = {}
    for key, value in ref.items():
        if key.endswith("Resampler.Kernel"):
            continue
        if key in fixed:
            out[fixed[key]] = value
            continue
        s, j, rest = re.match(r"^MainLayers\.(\d+)\.Layers\.(\d+)\.(.+)$", key).groups()
        s, j = int(s), int(j)
        if j == 0:  # a later stage's transition: its 1x1 conv when the width changes
            out[f"stages.{s}.0.conv.weight"] = value
        else:
            out[f"stages.{s}.{j - 1 if s == 0 else j}.{_r3gan_block(rest)}"] = value
    return out


def r3gan_discriminator_state(ref: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An R3GAN Discriminator's state dict in ganflow's names: stages of blocks then a downsampling
    transition; the last stage's transition is the discriminative basis, at the top level."""
    last = max(int(m.group(1)) for k in ref for m in [re.match(r"^MainLayers\.(\d+)\.", k)] if m)
    out = {}
    for key, value in ref.items():
        if key.endswith("Resampler.Kernel"):
            continue
        if key in ("ExtractionLayer.Layer.weight", "EmbeddingLayer.weight"):
            out["extract.weight" if key.startswith("Extraction") else "embed.weight"] = value
            continue
        s, j, rest = re.match(r"^MainLayers\.(\d+)\.Layers\.(\d+)\.(.+)$", key).groups()
        if re.match(r"^(LinearLayer\d|NonLinearity\d)\.", rest):
            out[f"stages.{s}.{j}.{_r3gan_block(rest)}"] = value
        elif int(s) == last:
            out["basis.weight" if rest == "Basis.weight" else "basis_linear.weight"] = value
        else:
            out[f"stages.{s}.{j}.conv.weight"] = value
    return out
