"""ganflow from Python (a notebook, a script): the functions the CLI's verbs are made of, typed.

    import ganflow
    run = ganflow.train("jobs/ring.yaml", **{"train.steps": 200})   # the run's location
    g = ganflow.load_generator(run)          # a run, a checkpoint, s3://..., or wandb:project/name:alias
    x = g.sample(16, seed=7)                 # (16, C, H, W) in [-1, 1], or (16, 2) for 2D models
    [r.status for r in ganflow.runs("runs")]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ganflow.config import JobConfig


class Generator:
    """A trained generator, rebuilt from a checkpoint alone (its EMA weights when the run kept them)."""

    def __init__(self, loaded):
        self._loaded = loaded
        self.module: torch.nn.Module = loaded.G

    @property
    def config(self) -> JobConfig:
        """The run's resolved job."""
        return self._loaded.config

    @property
    def num_classes(self) -> int:
        """0 for an unconditional generator."""
        return int(self.module.num_classes)

    @property
    def resolution(self) -> Optional[int]:
        """Side of its square images; None for a 2D-point generator."""
        shape = self._loaded.meta.sample_shape
        return int(shape[-1]) if len(shape) == 3 else None

    @property
    def step(self) -> int:
        return self._loaded.step

    @property
    def location(self) -> str:
        """The checkpoint it came from."""
        return self._loaded.location

    def to(self, device: Union[str, torch.device]) -> "Generator":
        self.module.to(device)
        return self

    def sample(self, n: int, labels: Union[int, Sequence[int], torch.Tensor, None] = None, seed: int = 0,
               truncation: Optional[float] = None) -> torch.Tensor:
        """`n` samples, deterministic in `seed` (the same on any device, as `ganflow sample`): images
        (n, C, H, W) in [-1, 1] or points (n, 2). `labels`: one class for all, one per sample, or
        None (drawn); `truncation`: psi of a style-based generator (1: none)."""
        from ganflow import models
        from ganflow.core.sampling import SampleError, generate

        if n <= 0:
            raise SampleError(f"n: must be > 0, got {n}")
        if truncation is not None and not models.spec(self.config.model.name).styles:
            raise SampleError(f"truncation: model.name={self.config.model.name} has no style space to truncate")
        return generate(self.module, n, seed, labels, truncation=truncation)[0]

    def __repr__(self) -> str:
        return (f"Generator({self.config.model.name}, step {self.step}, "
                f"{f'{self.resolution}px' if self.resolution else '2D'}, {self.num_classes} classes, from {self.location})")


def resolve_location(run_or_checkpoint: Union[str, Path]) -> str:
    """A run or checkpoint location; `wandb:project/name:alias` names one through the artifact ganflow logged."""
    from ganflow.tracking.artifacts import WANDB_SCHEME, resolve_artifact

    text = str(run_or_checkpoint)
    return resolve_artifact(text) if text.startswith(WANDB_SCHEME) else text


def load_generator(location: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Generator:
    """The generator of a run (its newest intact checkpoint), of one checkpoint, local or s3://, or
    of the checkpoint a W&B artifact names (`wandb:project/generator-ID:latest`)."""
    from ganflow.run.generator import load_generator as load

    return Generator(load(resolve_location(location))).to(device)


def train(job: Union[str, Path], address: Optional[str] = None, resume: Optional[str] = None, **overrides: Any) -> str:
    """Train `job` (a YAML file) with dotted overrides (`**{"train.steps": 200}`, or
    `train__steps=200`) on Ray: a local one in this process unless `address` names a cluster.
    Returns the run's location. Bad config raises ganflow.config.ConfigError before Ray starts."""
    from ganflow.job import load_job
    from ganflow.ray import driver

    dotted = [f"{key.replace('__', '.')}={value if isinstance(value, str) else json.dumps(value)}"
              for key, value in overrides.items()]
    return driver.run(load_job(str(job), dotted), address=address, resume=resume).uri


@dataclass(frozen=True)
class RunRecord:
    """One run as `ganflow runs list` shows it."""

    run: str
    status: str  # running | completed | failed | stopped | stale (running, no heartbeat for a while)
    step: int
    checkpoint_step: Optional[int]
    heartbeat: Optional[float]
    metrics: Dict[str, Any]  # the newest metrics record
    best: Optional[Dict[str, Any]]  # {"name", "value", "step"} of its best evaluation


def run_config(run) -> Optional[JobConfig]:
    """A run's resolved job, or None when it has none that reads (not a run, or a damaged one)."""
    from omegaconf import OmegaConf

    from ganflow.config import from_dict
    from ganflow.store import NotFound

    try:
        return from_dict(OmegaConf.to_container(OmegaConf.create(run.read_config())))
    except (NotFound, ValueError):
        return None


def best_evaluation(cfg: Optional[JobConfig], records: List[Dict[str, Any]]) -> Optional[Tuple[str, float, int]]:
    """(value name, best value, its step) by the run's own ranking metric (eval.best, else the first
    metric's headline), or None when the run has not evaluated."""
    from ganflow.metrics.scoring import EvalError, default_metrics, ranking

    if cfg is None:
        return None
    try:
        key, mode = ranking(cfg.eval.metrics or default_metrics(cfg), cfg.eval.best)
    except (EvalError, IndexError, KeyError):
        return None
    scored = [(r[f"eval/{key}"], r["step"]) for r in records if f"eval/{key}" in r]
    if not scored:
        return None
    value, step = (min if mode == "min" else max)(scored, key=lambda vs: vs[0])
    return key, value, step


def best_as_dict(best: Optional[Tuple[str, float, int]]) -> Optional[Dict[str, Any]]:
    """`best_evaluation`'s answer as the records and JSON carry it."""
    return {"name": best[0], "value": best[1], "step": best[2]} if best else None


def run_summaries(location: Union[str, Path]) -> List[Dict[str, Any]]:
    """What `ganflow runs list` shows of each run under a location: `run.summarize`'s fields, its
    records replaced by its best evaluation."""
    from ganflow.run.run import Run, list_runs

    summaries = list_runs(str(location))
    for r in summaries:
        r["best"] = best_as_dict(best_evaluation(run_config(Run.open(r["run"])), r.pop("records")))
    return summaries


def runs(location: Union[str, Path]) -> List[RunRecord]:
    """The runs under a storage location (a directory or s3://bucket/prefix), newest first."""
    return [RunRecord(run=r["run"], status=r["status"], step=r["step"], checkpoint_step=r["checkpoint_step"],
                      heartbeat=r.get("heartbeat"), metrics=dict(r.get("metrics") or {}), best=r["best"])
            for r in run_summaries(location)]
