"""Scoring a generator with the metrics that fit its data, by registry name: on demand
(`ganflow eval`, one JSON object per the contract in ARCHITECTURE.md) and during training
(`eval.every`, on the EMA generator, which also picks the best checkpoint).

    digits   Frechet distance in the bundled digits classifier's feature space (`fd_digits`),
             the real-vs-real floor at the same N, their ratio, and class coverage
    modes    2D mixtures (ring, grid): modes covered, share of samples within 3 std of a centre
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ganflow.config import JobConfig
from ganflow.data import build_dataset
from ganflow.sample import generate, load_generator


class EvalError(ValueError):
    pass


def _digits_extract(samples: torch.Tensor, cfg: JobConfig) -> torch.Tensor:
    from ganflow.metrics.digits import digits_features

    return digits_features(samples)


def _digits_compute(features: torch.Tensor, cfg: JobConfig) -> Dict[str, Any]:
    from ganflow.metrics.digits import digits_report_from_features

    return digits_report_from_features(features)


def _modes_compute(points: torch.Tensor, cfg: JobConfig) -> Dict[str, Any]:
    from ganflow.metrics.modes import mode_coverage

    data = build_dataset(cfg.data, cfg.train.seed)
    return mode_coverage(points, data.centers, data.std)


@dataclass(frozen=True)
class Metric:
    """`extract` runs on every worker for its share of the samples (features, not images, are
    gathered); `compute` runs once on all rows."""

    extract: Callable[[torch.Tensor, JobConfig], torch.Tensor]
    compute: Callable[[torch.Tensor, JobConfig], Dict[str, Any]]
    rankable: Dict[str, str]  # values that can rank generators -> "min" or "max"; the first is the headline


METRICS: Dict[str, Metric] = {
    "digits": Metric(_digits_extract, _digits_compute, {"fd_digits": "min", "fd_ratio": "min", "min_class_share": "max"}),
    "modes": Metric(lambda samples, cfg: samples.float().cpu(), _modes_compute, {"high_quality": "max", "modes": "max"}),
}
DEFAULT_FOR_DATA = {"digits": ["digits"], "ring": ["modes"], "grid": ["modes"]}


def default_metrics(data_name: str) -> List[str]:
    return list(DEFAULT_FOR_DATA.get(data_name, []))


def ranking(names: List[str], best: Optional[str] = None) -> Tuple[str, str]:
    """(value, "min" | "max") that picks the best generator: `best`, else the first metric's headline."""
    rankable = {k: mode for n in names for k, mode in METRICS[n].rankable.items()}
    if best is None:
        return next(iter(METRICS[names[0]].rankable.items()))
    if best not in rankable:
        raise EvalError(f"eval.best: {best!r} is not a value of {', '.join(names)}; choose one of {', '.join(rankable)}")
    return best, rankable[best]


def _gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every worker's rows, concatenated in rank order (uneven shares allowed); a single process
    gets its own back."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = rows.to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(local)], device=device))
    most = int(max(s.item() for s in sizes))
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(n.item())] for p, n in zip(parts, sizes)]).cpu()


def score(G: torch.nn.Module, cfg: JobConfig, names: List[str], num: int, seed: int = 1234,
          rank: int = 0, world: int = 1) -> Dict[str, Any]:
    """Every value of the metrics `names` for `num` samples of G, deterministic in `seed` and the
    same for any number of workers: each of `world` workers generates and extracts its contiguous
    share of one latent batch, the features are gathered, and rank 0 computes (others get {})."""
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise EvalError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    share = slice(num * rank // world, num * (rank + 1) // world)
    samples, _ = generate(G, num, seed=seed, rows=share)
    rows = {name: _gather_rows(METRICS[name].extract(samples, cfg)) for name in names}
    if rank != 0:
        return {}
    report: Dict[str, Any] = {}
    for name in names:
        report.update(METRICS[name].compute(rows[name], cfg))
    return report


def evaluate(run_or_checkpoint: str, num: int = 2000, metrics: Optional[List[str]] = None, seed: int = 1234) -> Dict[str, Any]:
    if num <= 1:
        raise EvalError(f"--num: must be > 1, got {num}")
    loaded = load_generator(run_or_checkpoint)
    cfg = loaded.config
    names = metrics or default_metrics(cfg.data.name)
    if not names:
        raise EvalError(f"no metric fits data.name={cfg.data.name} yet; available: {', '.join(METRICS)}")
    report = score(loaded.G, cfg, names, num, seed)
    report.update(checkpoint=str(loaded.location), step=loaded.step, num_generated=num)
    return report


def eval_due(cfg: JobConfig, step: int) -> bool:
    """Whether training evaluates at `step` (a pure function of the step: every rank agrees)."""
    every = cfg.eval.every
    return bool(every) and (step % every == 0 or step == cfg.train.steps)


class PeriodicEval:
    """Rank 0's evaluation during training, on the EMA generator. Remembers the best value of the
    ranking metric, also across a resume (from the run's earlier metrics records)."""

    def __init__(self, cfg: JobConfig, history: List[Dict[str, Any]]):
        self.cfg = cfg
        self.names = cfg.eval.metrics or default_metrics(cfg.data.name)
        self.key, self.mode = ranking(self.names, cfg.eval.best)
        past = [(r[f"eval/{self.key}"], r["step"]) for r in history if f"eval/{self.key}" in r]
        self.best: Optional[Tuple[float, int]] = None  # (value, step)
        for value, step in past:
            self._update(value, step)

    def _update(self, value: float, step: int) -> bool:
        better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
        if better:
            self.best = (value, step)
        return better

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, step: int, rank: int = 0, world: int = 1) -> Tuple[Dict[str, Any], bool]:
        """(`eval/<value>` records, whether this is the best generator so far) on rank 0; every
        rank calls it (each scores its share), the others get ({}, False)."""
        was_training = G.training
        G.eval()
        report = score(G, self.cfg, self.names, self.cfg.eval.num_samples, rank=rank, world=world)
        G.train(was_training)
        if rank != 0:
            return {}, False
        best = self._update(report[self.key], step)
        values = {f"eval/{k}": v for k, v in report.items()}
        values["eval/num_generated"] = self.cfg.eval.num_samples
        return values, best

    def summary(self) -> Dict[str, Any]:
        if self.best is None:
            return {}
        return {f"best/{self.key}": self.best[0], "best/step": self.best[1]}
