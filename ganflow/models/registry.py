"""The model registry: name -> builder, with the traits the rest of ganflow asks about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from torch import nn

from ganflow.config import ModelConfig

Builder = Callable[[ModelConfig, tuple, int], Tuple[nn.Module, nn.Module]]


@dataclass(frozen=True)
class ModelSpec:
    build: Builder  # (cfg, sample_shape, num_classes) -> (G, D)
    data_kind: str  # "images" | "points": the data it generates
    conditional: bool = False  # takes class labels: needs labelled data


MODELS: Dict[str, ModelSpec] = {}


def register(name: str, **traits):
    def deco(fn):
        MODELS[name] = ModelSpec(fn, **traits)
        return fn

    return deco


def spec(name: str) -> ModelSpec:
    return MODELS[name]


def generator_classes(name: str, data_classes: int) -> int:
    """How many labels model `name` takes on data with `data_classes` classes: the one answer to
    "is it conditional" (training, sampling and export all ask here)."""
    return data_classes if MODELS[name].conditional else 0


def build_models(cfg: ModelConfig, sample_shape: tuple, data_classes: int = 0) -> Tuple[nn.Module, nn.Module]:
    return MODELS[cfg.name].build(cfg, tuple(sample_shape), generator_classes(cfg.name, data_classes))
