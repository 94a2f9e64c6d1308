"""Hyperparameter schedules (`train.schedules`): a value ramped from `start` to `end` over the first
`kimg` thousand real images, then held, as R3GAN anneals its learning rate, Adam's beta2, the R1/R2
gamma, the augmentation probability and the EMA half-life. A value is a pure function of the step,
so a resumed run, a restarted worker and any number of workers agree without saving anything."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict

from ganflow.config import ScheduleConfig, TrainConfig

SHAPES: Dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "cosine": lambda x: 0.5 * (1 - math.cos(math.pi * x)),  # R3GAN's cosine_decay_with_warmup without warm-up
}


@dataclass(frozen=True)
class Target:
    """What a schedule may drive, and what it needs of the rest of the job (checked by `ganflow.job`)."""

    doc: str
    needs: str = ""  # "adam": an optimizer with betas; "ema": the EMA generator; "fixed_p": train.augment with a fixed p


TARGETS: Dict[str, Target] = {
    "lr": Target("both optimizers' learning rate (lazy regularisation's rescaling still applies)"),
    "beta1": Target("both optimizers' Adam beta1", needs="adam"),
    "beta2": Target("both optimizers' Adam beta2", needs="adam"),
    "r1_gamma": Target("loss.r1_gamma"),
    "r2_gamma": Target("loss.r2_gamma"),
    "augment_p": Target("train.augment_p, the chance each DiffAugment op applies", needs="fixed_p"),
    "ema_half_life_kimg": Target("the EMA generator's half-life in thousands of images (replaces train.ema_decay)",
                                 needs="ema"),
}


def value(s: ScheduleConfig, images: float) -> float:
    """The schedule's value after `images` real images."""
    x = min(max(images / (s.kimg * 1000.0), 0.0), 1.0)
    return s.start + (s.end - s.start) * SHAPES[s.shape](x)


def at(t: TrainConfig, step: int) -> Dict[str, float]:
    """Every scheduled value at the start of step `step` (from 0): `step * batch_size` images seen."""
    return {name: value(s, step * t.batch_size) for name, s in t.schedules.items()}


def ema_beta(half_life_kimg: float, batch_size: int) -> float:
    """The EMA's per-step decay for a half-life in thousands of images (StyleGAN2-ADA, R3GAN)."""
    return 0.5 ** (batch_size / max(half_life_kimg * 1000.0, 1e-8))
