"""The model registry: name -> builder, with the traits the rest of ganflow asks about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from torch import nn

from ganflow.config import JobConfig, ModelConfig

Builder = Callable[[ModelConfig, tuple, int], Tuple[nn.Module, nn.Module]]


@dataclass(frozen=True)
class ModelSpec:
    build: Builder  # (cfg, sample_shape, num_classes) -> (G, D)
    data_kind: str  # "images" | "points": the data it generates
    labels: str = "never"  # never | required (needs labelled data) | if_labelled (conditional when the data has classes)
    d_reg_every: int = 1  # loss.d_reg_every when the job leaves it out (R1/R2 every N steps)
    g_reg_every: int = 1  # loss.g_reg_every likewise (path length)
    pl_weight: float = 0.0  # loss.pl_weight likewise; > 0 only where G(z, y, return_ws=True) gives its styles
    styles: bool = False  # G has a style space: path-length regularisation and sampling truncation apply
    check: Optional[Callable[[JobConfig], None]] = None  # the model's own checks of a job (config.load.fail on a problem)

    @property
    def needs_labels(self) -> bool:
        """Refuses unlabelled data (a class-conditional model by name, like cdcgan); whether a built
        model takes labels is `generator_classes`'s answer."""
        return self.labels == "required"


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
    return 0 if MODELS[name].labels == "never" else data_classes


def build_models(cfg: ModelConfig, sample_shape: tuple, data_classes: int = 0) -> Tuple[nn.Module, nn.Module]:
    return MODELS[cfg.name].build(cfg, tuple(sample_shape), generator_classes(cfg.name, data_classes))
