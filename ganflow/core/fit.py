"""The training loop, Ray-free: GAN steps until `train.steps`, and after each one a single hook,
handed a `StepEnd` (the step, its averaged metrics at a log step, and which of the configured
cadences fall on it): writing metrics, sample grids, checkpoints, evaluating, reporting to Ray
and stopping are the hook's. The Ray worker's hook is `ganflow.ray.worker.WorkerHooks`; tests and
benchmarks call `fit` as it is.

Every rank runs the same loop on its share of the global batch; a log step's values are averaged
across ranks (torch.distributed, when initialised) before the hook sees them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ganflow.config import JobConfig, TrainConfig
from ganflow.core.batch import BatchPlan
from ganflow.core.gan import GANStep
from ganflow.core.state import TrainingState, unwrap
from ganflow.core.trace import mark

Batches = Callable[[int], Tuple[Tensor, Optional[Tensor]]]  # global batch index -> this rank's (images, labels)


@dataclass(frozen=True)
class StepEnd:
    """What `fit`'s hook is told after each step, the same on every rank."""

    step: int  # steps done
    metrics: Dict[str, float] = field(default_factory=dict)  # at a log step: averaged across ranks, with step and throughput
    log: bool = False  # train.log_every, an evaluation step, or the last step
    sample: bool = False  # train.sample_every or the last step
    evaluate: bool = False  # eval.every or the last step (when eval.every is set)
    checkpoint: bool = False  # train.checkpoint_every or the last step
    last: bool = False  # train.steps


Hook = Callable[[StepEnd], None]


class Preempted(RuntimeError):
    """Training stopped at a step boundary after a preemption notice, its checkpoint written."""


def mean_across_workers(values: Dict[str, float], device: torch.device) -> Dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def process_settings(train: TrainConfig) -> None:
    """Process-wide switches a training process sets once (PyTorch keeps them per process): TF32
    matmuls and convolutions with train.tf32 (off leaves PyTorch's defaults); cuDNN's autotuner with
    train.cudnn_benchmark (a GAN's shapes never change; it has no effect without cuDNN)."""
    torch.backends.cudnn.benchmark = train.cudnn_benchmark
    if train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def step_end(cfg: JobConfig, step: int) -> StepEnd:
    """Which cadences fall on `step` (a pure function of the step: every rank agrees)."""
    t, every = cfg.train, cfg.eval.every
    last = step == t.steps
    evaluate = bool(every) and (step % every == 0 or last)
    return StepEnd(step, log=step % t.log_every == 0 or last or evaluate, sample=step % t.sample_every == 0 or last,
                   evaluate=evaluate, checkpoint=step % t.checkpoint_every == 0 or last, last=last)


def fit(cfg: JobConfig, state: TrainingState, batches: Batches, hook: Optional[Hook] = None, *, rank: int = 0,
        world: int = 1, G: Optional[nn.Module] = None, D: Optional[nn.Module] = None) -> TrainingState:
    """Train `state` from its step to `cfg.train.steps`, calling `hook` after every step. `G` and `D`
    are the models to step (DDP wrappers of `state.G`/`state.D` under several workers; those
    themselves by default)."""
    G, D = G or state.G, D or state.D
    t = cfg.train
    device = next(state.G.parameters()).device
    stepper = GANStep(cfg, device, unwrap(G).num_classes, BatchPlan.of(t, world), rank)
    stepper.prepare(G, D)
    images_per_step = t.batch_size * stepper.n_critic
    window_start, window_steps = time.perf_counter(), 0
    first = state.step
    while state.step < t.steps:
        end = step_end(cfg, state.step + 1)
        out = stepper.step(state, G, D, batches, want_norms=end.log)
        if state.step == first + 1:
            mark("first_step")
        window_steps += 1
        if end.log:
            metrics = mean_across_workers({k: v.item() for k, v in out.items()}, device)
            metrics["throughput/imgs_per_s"] = images_per_step * window_steps / (time.perf_counter() - window_start)
            metrics["lr/g"] = state.opt_g.param_groups[0]["lr"] / state.lr_scale[0]  # the configured rates
            metrics["lr/d"] = state.opt_d.param_groups[0]["lr"] / state.lr_scale[1]
            metrics["step"] = end.step
            end = dataclasses.replace(end, metrics=metrics)
        if hook is not None:
            hook(end)
        if end.log:  # the next window starts after the hook's logging and evaluation
            window_start, window_steps = time.perf_counter(), 0
    return state
