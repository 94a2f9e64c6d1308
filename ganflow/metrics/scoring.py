"""Scoring a generator with metrics by registry name: on demand (`ganflow eval`) and during
training (`eval.every`, on the EMA generator, which also picks the best checkpoint).

    fid      Frechet distance of the generated features to the real data's (reference statistics)
    kid      kernel inception distance (unbiased, polynomial kernel), mean and std over subsets
    is       Inception Score over the extractor's classes, mean and std over 10 splits
    pr       improved precision and recall (Kynkaanniemi et al. 2019, k=3)
    classes  digits only: share of the rarest class and classes above 5% (mode collapse)
    modes    2D mixtures (ring, grid): modes covered, share of samples within 3 std of a centre

The image metrics use one feature extractor (eval.extractor: the FID Inception, or the bundled
digits classifier for digits), whose protocol is reported with the values, as is N.
Every worker generates and extracts its share of the samples; features, not images, are gathered.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ganflow import data
from ganflow.config import JobConfig
from ganflow.core.batch import share
from ganflow.present.progress import Progress
from ganflow.core.sampling import generate

CHUNK = 1000  # samples generated and extracted at a time
NO_CLASSIFIER = ("eval.metrics: is needs the Inception classifier, which these weights lack (fid-helper's "
                 "TorchScript); use pt_inception-2015-12-05-6726825d.pth as eval.inception_weights, or drop is")


class EvalError(ValueError):
    """Metrics that do not fit the run (data, extractor) or arguments out of range."""


@dataclass
class Scored:
    """What the metrics compute on (rank 0, after the gather)."""

    cfg: JobConfig
    features: Optional[torch.Tensor] = None  # generated samples' features
    probs: Optional[torch.Tensor] = None  # their class probabilities
    reference: Any = None  # metrics.reference.Reference of the real data
    points: Optional[torch.Tensor] = None  # 2D samples


def _fid(s: Scored) -> Dict[str, Any]:
    from ganflow.metrics.kernels import feature_stats, frechet_distance

    return {"fid": frechet_distance(s.reference.mu, s.reference.sigma, *feature_stats(s.features.numpy()))}


def _kid(s: Scored) -> Dict[str, Any]:
    from ganflow.metrics.kernels import kernel_distance

    return kernel_distance(s.features, s.reference.features)


def _is(s: Scored) -> Dict[str, Any]:
    from ganflow.metrics.kernels import inception_score

    if s.probs.shape[1] == 0:  # weights without the classifier: IS left out unless asked for by name
        if "is" in s.cfg.eval.metrics:
            raise EvalError(NO_CLASSIFIER)
        return {}
    out = inception_score(s.probs)
    return {"is": out["is"], "is_std": out["is_std"]}


def _pr(s: Scored) -> Dict[str, Any]:
    from ganflow.metrics.kernels import precision_recall

    return precision_recall(s.reference.features, s.features, k=3)


def _classes(s: Scored) -> Dict[str, Any]:
    import numpy as np

    shares = np.bincount(s.probs.argmax(1).numpy(), minlength=s.probs.shape[1]) / len(s.probs)
    if s.cfg.data.classes and all(c.isdigit() for c in s.cfg.data.classes):  # a run on some digits: coverage of those
        shares = shares[[int(c) for c in s.cfg.data.classes]]
    return {"min_class_share": float(shares.min()), "classes_covered_5pct": int((shares >= 0.05).sum())}


def _modes(s: Scored) -> Dict[str, Any]:
    from ganflow.metrics.modes import mode_coverage

    real = data.build_dataset(s.cfg.data, s.cfg.train.seed)
    return mode_coverage(s.points, real.centers, real.std)


@dataclass(frozen=True)
class Metric:
    needs: str  # "features" (images, through the extractor) or "points" (2D samples as they are)
    compute: Callable[[Scored], Dict[str, Any]]
    rankable: Dict[str, str]  # values that can rank generators -> "min" or "max"; the first is the headline
    extractors: Tuple[str, ...] = ("inception", "digits")


METRICS: Dict[str, Metric] = {
    "fid": Metric("features", _fid, {"fid": "min"}),
    "kid": Metric("features", _kid, {"kid": "min"}),
    "is": Metric("features", _is, {"is": "max"}),
    "pr": Metric("features", _pr, {"precision": "max", "recall": "max"}),
    "classes": Metric("features", _classes, {"min_class_share": "max"}, extractors=("digits",)),
    "modes": Metric("points", _modes, {"high_quality": "max", "modes": "max"}),
}


def default_metrics(cfg: JobConfig) -> List[str]:
    """What the data set declares (ganflow.data), less what the extractor cannot give, when eval.metrics is empty."""
    from ganflow.metrics.features import extractor_name

    names = data.spec(cfg.data.name).metrics
    return [n for n in names if METRICS[n].needs != "features" or extractor_name(cfg) in METRICS[n].extractors]


def check_metrics(cfg: JobConfig, names: List[str], key: str = "eval.metrics") -> None:
    """Names known, and fitting the data and the extractor (EvalError naming `key` otherwise)."""
    from ganflow.metrics.features import extractor_name

    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise EvalError(f"{key}: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    is_image = data.spec(cfg.data.name).is_image
    for name in names:
        metric = METRICS[name]
        if metric.needs == "points" and is_image:
            raise EvalError(f"{key}: {name} scores 2D data, not images; use fid, kid, is, pr")
        if metric.needs == "features" and not is_image:
            raise EvalError(f"{key}: {name} scores images; 2D data has modes")
        if metric.needs == "features" and extractor_name(cfg) not in metric.extractors:
            raise EvalError(f"{key}: {name} needs eval.extractor={' or '.join(metric.extractors)}")


def check_extractor(cfg: JobConfig, storage=None) -> None:
    """The extractor's weights can be found (InceptionWeightsError saying where to put them)."""
    from ganflow.metrics.features import extractor_name
    from ganflow.metrics.inception import find_weights

    names = cfg.eval.metrics or default_metrics(cfg)
    if extractor_name(cfg) == "inception" and any(METRICS[n].needs == "features" for n in names):
        find_weights(cfg.eval.inception_weights, storage)
        if "is" in cfg.eval.metrics:  # by default, IS is left out when the weights cannot give it
            from ganflow.metrics.inception import InceptionWeightsError, load_inception

            if not load_inception(cfg.eval.inception_weights, storage).has_classifier:
                raise InceptionWeightsError(NO_CLASSIFIER)


def rankable_values(names: List[str]) -> Dict[str, str]:
    """Every value these metrics give that can rank generators, with its direction ("min" | "max")."""
    return {k: mode for n in names for k, mode in METRICS[n].rankable.items()}


def ranking(names: List[str], best: Optional[str] = None) -> Tuple[str, str]:
    """(value, "min" | "max") that picks the best generator: `best`, else the first metric's headline."""
    rankable = rankable_values(names)
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
        return rows.cpu()
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


class Scorer:
    """Scores generators with `names` for one job: the extractor and the real data's reference
    statistics are loaded once and kept (every evaluation of a run reuses them)."""

    def __init__(self, cfg: JobConfig, names: List[str], storage=None, progress: bool = False):
        check_metrics(cfg, names)
        self.cfg, self.names, self.storage = cfg, names, storage
        self.progress = progress  # show it (the CLI's `eval`; training has its own)
        self.needs = {METRICS[n].needs for n in names}
        self.extractor = None
        self.reference = None
        self._ready = False

    @property
    def protocol(self) -> Optional[str]:
        return self.extractor.protocol if self.extractor else None

    @property
    def reference_used(self) -> Optional[str]:
        """Which real-data statistics the features were compared with (rank 0)."""
        return self.reference.description if self.reference is not None else None

    def _prepare(self, device: torch.device, rank: int, world: int) -> None:
        if self._ready:
            return
        if "features" in self.needs:
            from ganflow.metrics.features import load_extractor
            from ganflow.metrics.reference import load_or_build

            from ganflow.metrics.reference import ReferenceFileError

            self.extractor = load_extractor(self.cfg, self.storage, device)
            try:
                self.reference = load_or_build(self.cfg, self.extractor, self.storage, rank, world, _gather_rows,
                                               self.progress)
            except ReferenceFileError as err:
                raise EvalError(str(err)) from None
        self._ready = True

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, num: int, seed: int = 1234, rank: int = 0, world: int = 1) -> Dict[str, Any]:
        """Every value for `num` samples of G, deterministic in `seed` and the same for any number
        of workers: each of `world` workers generates and extracts its contiguous share of one
        latent batch, the rows are gathered, and rank 0 computes (the others get {})."""
        self._prepare(next(G.parameters()).device, rank, world)
        mine = share(num, rank, world)
        start, stop = mine.start, mine.stop
        extracted, points = [], []
        with Progress(stop - start, "generate and extract", "samples") if self.progress else contextlib.nullcontext() as bar:
            for first in range(start, stop, CHUNK) or [start]:  # in chunks: the rows of one latent batch either way
                samples, _ = generate(G, num, seed=seed, rows=slice(first, min(first + CHUNK, stop)))
                if "features" in self.needs:
                    extracted.append(torch.cat(self.extractor.extract(samples), dim=1))
                if "points" in self.needs:
                    points.append(samples.float())
                if bar is not None:
                    bar.update(len(samples))
        scored = Scored(self.cfg, reference=self.reference)
        if "features" in self.needs:
            rows = _gather_rows(torch.cat(extracted))
            scored.features, scored.probs = rows[:, : self.extractor.dim], rows[:, self.extractor.dim :]
        if "points" in self.needs:
            scored.points = _gather_rows(torch.cat(points))
        if rank != 0:
            return {}
        report: Dict[str, Any] = {}
        for name in self.names:
            report.update(METRICS[name].compute(scored))
        return report


def score(G: torch.nn.Module, cfg: JobConfig, names: List[str], num: int, seed: int = 1234,
          rank: int = 0, world: int = 1, storage=None) -> Dict[str, Any]:
    """One-off `Scorer(cfg, names)(G, ...)`."""
    return Scorer(cfg, names, storage)(G, num, seed, rank, world)


class PeriodicEval:
    """Rank 0's evaluation during training, on the EMA generator. Remembers the best value of the
    ranking metric, also across a resume (from the run's earlier metrics records)."""

    def __init__(self, cfg: JobConfig, history: List[Dict[str, Any]], storage=None):
        self.cfg = cfg
        self.names = cfg.eval.metrics or default_metrics(cfg)
        self.key, self.mode = ranking(self.names, cfg.eval.best)
        self.scorer = Scorer(cfg, self.names, storage)
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
        started = time.perf_counter()
        report = self.scorer(G, self.cfg.eval.num_samples, rank=rank, world=world)
        G.train(was_training)
        if rank != 0:
            return {}, False
        best = self._update(report[self.key], step)
        values = {f"eval/{k}": v for k, v in report.items()}
        values["eval/num_generated"] = self.cfg.eval.num_samples
        values["eval/seconds"] = round(time.perf_counter() - started, 3)  # what evaluation costs the run
        return values, best

    def summary(self) -> Dict[str, Any]:
        out = {"eval/protocol": self.scorer.protocol} if self.scorer.protocol else {}
        if self.scorer.reference_used:
            out["eval/reference"] = self.scorer.reference_used
        if self.best is not None:
            out.update({f"best/{self.key}": self.best[0], "best/step": self.best[1]})
        return out
