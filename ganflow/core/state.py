"""What training holds and a resume restores (`TrainingState`), and what a checkpoint says about
the data (`DataMeta`), so a generator can be rebuilt from the checkpoint alone."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ganflow.config import JobConfig, OptimizerConfig
from ganflow.core.losses import Regularisers


@dataclass(frozen=True)
class DataMeta:
    """The data set's facts a checkpoint keeps: the shape of one sample, its classes (label order)
    and, for 2D mixtures, the centres sample plots mark. Stored as the manifest's `meta`."""

    sample_shape: Tuple[int, ...]
    num_classes: int = 0
    classes: List[str] = field(default_factory=list)
    centers: Optional[List[List[float]]] = None

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3

    def to_dict(self) -> Dict[str, Any]:
        return {"sample_shape": list(self.sample_shape), "num_classes": self.num_classes,
                "classes": list(self.classes), "centers": self.centers}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataMeta":
        return cls(tuple(d["sample_shape"]), int(d.get("num_classes") or 0), list(d.get("classes") or []),
                   d.get("centers"))


OPTIMIZERS = {
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.betas[0], weight_decay=c.weight_decay),
}


def build_optimizer(cfg: OptimizerConfig, params, scale: float = 1.0) -> torch.optim.Optimizer:
    """`scale` < 1: lazy regularisation's rescaling, lr * c and betas ** c (see `Regularisers.lr_scales`)."""
    if scale != 1.0:
        cfg = dataclasses.replace(cfg, lr=cfg.lr * scale, betas=[b**scale for b in cfg.betas])
    return OPTIMIZERS[cfg.name](params, cfg)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


@dataclass
class GANState:
    """The GAN step's running values, which a resume restores: adaptive augmentation's p and its sum
    of sign(D(real)) since p last moved, and the path-length regulariser's running mean."""

    augment_p: float = 0.0
    ada_sum: float = 0.0
    pl_mean: float = 0.0

    def state_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, sd: Dict[str, float]) -> "GANState":
        """A checkpoint's values; a value the checkpoint predates (or its step never used) starts fresh."""
        unknown = set(sd) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"checkpoint: unknown GAN step values {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in sd.items()})


@dataclass
class TrainingState:
    """Everything a resume needs: models, EMA, optimizers, grad scalers, step, RNG."""

    G: nn.Module
    D: nn.Module
    G_ema: Optional[nn.Module]
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler
    step: int = 0
    lr_scale: Tuple[float, float] = (1.0, 1.0)  # lazy regularisation's (G, D) rescaling of the configured rates
    gan: GANState = field(default_factory=GANState)

    @classmethod
    def create(cls, cfg: JobConfig, G: nn.Module, D: nn.Module, device: torch.device) -> "TrainingState":
        G, D = G.to(device), D.to(device)
        if cfg.train.channels_last:  # 4D weights only; the GAN step hands its images over likewise
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.train.ema_decay > 0 else None
        fp16 = cfg.train.precision == "fp16"
        scale_g, scale_d = Regularisers.of(cfg.loss).lr_scales()
        return cls(
            G=G,
            D=D,
            G_ema=G_ema,
            opt_g=build_optimizer(cfg.optim.g, G.parameters(), scale_g),
            opt_d=build_optimizer(cfg.optim.d, D.parameters(), scale_d),
            scaler_g=torch.amp.GradScaler(device.type, enabled=fp16),
            scaler_d=torch.amp.GradScaler(device.type, enabled=fp16),
            lr_scale=(scale_g, scale_d),
        )

    @property
    def sampler_model(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA one when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    def state_dict(self) -> Dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "step": self.step,
            "gan": self.gan.state_dict(),
        }

    def load_state_dict(self, sd: Dict) -> None:
        self.G.load_state_dict(sd["G"])
        self.D.load_state_dict(sd["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(sd.get("G_ema", sd["G"]))
        self.opt_g.load_state_dict(sd["opt_g"])
        self.opt_d.load_state_dict(sd["opt_d"])
        if sd.get("scaler_g"):
            self.scaler_g.load_state_dict(sd["scaler_g"])
        if sd.get("scaler_d"):
            self.scaler_d.load_state_dict(sd["scaler_d"])
        torch.set_rng_state(sd["rng"]["torch"])
        self.step = int(sd["step"])
        self.gan = GANState.from_state_dict(sd.get("gan", {}))  # checkpoints of ganflow 0.1.0 have none

    def set_lr(self, lr_g: float, lr_d: float) -> None:
        """Re-apply the configured learning rates; an optimizer state load would otherwise restore old ones."""
        for group in self.opt_g.param_groups:
            group["lr"] = lr_g * self.lr_scale[0]
        for group in self.opt_d.param_groups:
            group["lr"] = lr_d * self.lr_scale[1]
