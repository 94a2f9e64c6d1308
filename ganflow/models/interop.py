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
from typing import Dict

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
