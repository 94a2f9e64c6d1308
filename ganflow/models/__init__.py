"""Generator/discriminator pairs by registry name. Models are single-device; DDP wraps them in train.py."""

from __future__ import annotations

from typing import Callable, Dict, Tuple

from torch import nn

from ganflow.config import ModelConfig

# name -> builder(cfg, sample_shape, num_classes) -> (G, D)
MODELS: Dict[str, Callable[[ModelConfig, tuple, int], Tuple[nn.Module, nn.Module]]] = {}


def register(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn

    return deco


def build_models(cfg: ModelConfig, sample_shape: tuple, num_classes: int = 0) -> Tuple[nn.Module, nn.Module]:
    return MODELS[cfg.name](cfg, tuple(sample_shape), num_classes)


def is_conditional(G: nn.Module) -> bool:
    return getattr(G, "num_classes", 0) > 0


from ganflow.models import dcgan as _dcgan  # noqa: E402,F401
from ganflow.models import mlp as _mlp  # noqa: E402,F401
