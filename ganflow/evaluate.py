"""`ganflow eval`: score a run's (EMA) generator with the metrics that fit its data, by name.

Prints one JSON object (the contract in ARCHITECTURE.md): metric name -> value, plus the
checkpoint, its step and the sample count, which every number depends on.

    digits   Frechet distance in the bundled digits classifier's feature space (`fd_digits`),
             the real-vs-real floor at the same N, their ratio, and class coverage
    modes    2D mixtures (ring, grid): modes covered, share of samples within 3 std of a centre
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch

from ganflow.config import JobConfig
from ganflow.data import build_dataset
from ganflow.sample import generate, load_generator


class EvalError(ValueError):
    pass


def _digits(samples: torch.Tensor, cfg: JobConfig) -> Dict[str, Any]:
    from ganflow.metrics.digits import digits_report

    return digits_report(samples)


def _modes(samples: torch.Tensor, cfg: JobConfig) -> Dict[str, Any]:
    from ganflow.metrics.modes import mode_coverage

    data = build_dataset(cfg.data, cfg.train.seed)
    return mode_coverage(samples, data.centers, data.std)


METRICS: Dict[str, Callable[[torch.Tensor, JobConfig], Dict[str, Any]]] = {"digits": _digits, "modes": _modes}
DEFAULT_FOR_DATA = {"digits": ["digits"], "ring": ["modes"], "grid": ["modes"]}


def evaluate(run_or_checkpoint: str, num: int = 2000, metrics: Optional[List[str]] = None, seed: int = 1234) -> Dict[str, Any]:
    if num <= 1:
        raise EvalError(f"--num: must be > 1, got {num}")
    loaded = load_generator(run_or_checkpoint)
    G, cfg = loaded.G, loaded.config
    names = metrics or DEFAULT_FOR_DATA.get(cfg.data.name)
    if not names:
        raise EvalError(f"no metric fits data.name={cfg.data.name} yet; available: {', '.join(METRICS)}")
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise EvalError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    samples, _ = generate(G, num, seed=seed)
    report: Dict[str, Any] = {}
    for name in names:
        report.update(METRICS[name](samples, cfg))
    report.update(checkpoint=str(loaded.location), step=loaded.step, num_generated=num)
    return report
