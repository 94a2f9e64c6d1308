"""The training loop, Ray-free: GAN steps until `train.steps`, with hooks for what happens around
them (metrics, sample grids, checkpoints, evaluations, progress reports). The Ray worker wraps it
in a few dozen lines; tests and benchmarks call it as it is.

Every rank runs the same loop on its slice of the global batch; values are averaged across ranks
(torch.distributed, when initialised) before rank 0 hands them to `Hooks.log`.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ganflow.config import JobConfig
from ganflow.core.batch import BatchPlan
from ganflow.core.gan import GANStep, global_sum
from ganflow.core.state import TrainingState, unwrap
from ganflow.core.trace import mark

Batches = Callable[[int], Tuple[Tensor, Optional[Tensor]]]  # global batch index -> this rank's (images, labels)


class Hooks:
    """What `fit` calls out to; each does nothing here. `log` and `sample` run on rank 0 only, the
    others on every rank (each must do the same collective work on all of them)."""

    def report_due(self) -> bool:
        """Whether a metrics-only report is wanted at this log step (any rank's yes counts)."""
        return False

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        """A log step's values, averaged across ranks (rank 0)."""

    def sample(self, step: int, images: Tensor) -> None:
        """The sampler generator's output on the run's fixed latents (rank 0)."""

    def evaluate(self, step: int) -> Tuple[Dict[str, float], bool]:
        """(values to log, whether this generator is the best so far) at an evaluation step."""
        return {}, False

    def checkpoint(self, step: int, metrics: Dict[str, float], best: bool) -> None:
        """At every `checkpoint_every` steps and the last step."""

    def report(self, metrics: Dict[str, float]) -> None:
        """A log step where `report_due` said yes and no checkpoint is made."""

    def preempted(self) -> bool:
        """Whether this rank was told to stop (train.checkpoint_on_preempt; asked after every step)."""
        return False


class Preempted(RuntimeError):
    """Training stopped at a step boundary after a preemption notice, its checkpoint written."""


def eval_due(cfg: JobConfig, step: int) -> bool:
    """Whether training evaluates at `step` (a pure function of the step: every rank agrees)."""
    every = cfg.eval.every
    return bool(every) and (step % every == 0 or step == cfg.train.steps)


def mean_across_workers(values: Dict[str, float], device: torch.device) -> Dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def fit(cfg: JobConfig, state: TrainingState, batches: Batches, hooks: Optional[Hooks] = None, *, rank: int = 0,
        world: int = 1, G: Optional[nn.Module] = None, D: Optional[nn.Module] = None) -> TrainingState:
    """Train `state` from its step to `cfg.train.steps`. `G` and `D` are the models to step (DDP
    wrappers of `state.G`/`state.D` under several workers; those themselves by default)."""
    hooks = hooks or Hooks()
    G, D = G or state.G, D or state.D
    t = cfg.train
    if cfg.train.tf32:  # process-wide, as PyTorch keeps it; off leaves PyTorch's defaults
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = next(state.G.parameters()).device
    stepper = GANStep(cfg, device, unwrap(G).num_classes, BatchPlan.of(t, world), rank)
    stepper.prepare(G, D)
    fixed = stepper.fixed_latents(t.num_sample_images) if rank == 0 else None
    images_per_step = t.batch_size * stepper.n_critic
    window_start, window_steps = time.perf_counter(), 0
    first = state.step

    while state.step < t.steps:
        next_step = state.step + 1
        eval_now, best = eval_due(cfg, next_step), False
        log_now = next_step % t.log_every == 0 or next_step == t.steps or eval_now
        out = stepper.step(state, G, D, batches, want_norms=log_now)
        if next_step == first + 1:
            mark("first_step")
        window_steps += 1
        step = state.step

        metrics: Dict[str, float] = {}
        report_due = False
        if log_now:
            values = {k: v.item() for k, v in out.items()}
            values["_report_due"] = float(hooks.report_due())  # every rank must make the same reports: decide together
            metrics = mean_across_workers(values, device)
            report_due = metrics.pop("_report_due") > 0
            metrics["throughput/imgs_per_s"] = images_per_step * window_steps / (time.perf_counter() - window_start)
            metrics["lr/g"] = state.opt_g.param_groups[0]["lr"] / state.lr_scale[0]  # the configured rates
            metrics["lr/d"] = state.opt_d.param_groups[0]["lr"] / state.lr_scale[1]
            metrics["step"] = step
            if eval_now:
                scores, best = hooks.evaluate(step)
                metrics.update(scores)
            if rank == 0:
                hooks.log(step, metrics)
            window_start, window_steps = time.perf_counter(), 0

        if rank == 0 and (step % t.sample_every == 0 or step == t.steps):
            hooks.sample(step, _draw(state.sampler_model, fixed))

        # any rank's notice stops every rank at the same step (a collective a step, only when asked for)
        preempted = t.checkpoint_on_preempt and global_sum(torch.tensor(float(hooks.preempted()), device=device)) > 0
        if step % t.checkpoint_every == 0 or step == t.steps or preempted:
            hooks.checkpoint(step, metrics or {"step": step}, best)
        elif report_due:
            hooks.report(metrics)
        if preempted and step < t.steps:
            raise Preempted(f"preempted: stopped at step {step} with its checkpoint written")
    return state


@torch.no_grad()
def _draw(G: nn.Module, fixed: tuple) -> Tensor:
    was_training = G.training
    G.eval()
    out = G(*fixed)
    G.train(was_training)
    return out
