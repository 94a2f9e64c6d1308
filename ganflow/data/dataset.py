"""Data sets and their registry (entries declare their traits), and the stateless batch sampler
every worker uses.

A data set is a tensor in memory (or, for images in a bucket, a stream: see images.py): `x` (N, 2) for 2D mixtures or (N, C, H, W) in [-1, 1] for
images, with optional integer labels. Batches are a pure function of (seed, batch index), so a
resumed run sees exactly the batches it would have seen, and the global batch is split by rank,
so two workers on half-batches see what one worker sees on the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ganflow.config import ConfigError, DataConfig
from ganflow.core.batch import BatchPlan
from ganflow.core.rng import STREAM_BATCHES, STREAM_XFLIP, rng_seed
from ganflow.core.state import DataMeta


@dataclass
class Dataset:
    x: Optional[torch.Tensor]  # None for a data set streamed from object storage (see images.py)
    y: Optional[torch.Tensor] = None  # int64 labels, or None
    num_classes: int = 0
    centers: Optional[torch.Tensor] = None  # mixture centres of 2D data sets
    std: float = 0.0  # per-component std of 2D data sets
    sample_shape: Optional[tuple] = None  # of a streamed data set
    size: Optional[int] = None  # of a streamed data set
    classes: Optional[list] = None  # class folder names of an image data set
    source: Any = None  # a prepared set (data.prepared.PreparedSet) read image by image, instead of x
    rows: Optional[torch.Tensor] = None  # the source's images this data set holds (data.classes), in order

    @property
    def streamed(self) -> bool:
        return self.x is None and self.source is None

    def __len__(self) -> int:
        if self.source is not None:
            return len(self.rows)
        return self.size if self.streamed else self.x.shape[0]

    @property
    def shape(self) -> tuple:
        """Shape of one sample: (2,) or (C, H, W)."""
        if self.source is not None:
            return tuple(self.source.shape)
        return tuple(self.sample_shape) if self.streamed else tuple(self.x.shape[1:])

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """The samples at these indices, as floats ([-1, 1] for images), on the CPU."""
        if self.source is None:
            return self.x[indices]
        return torch.from_numpy(self.source.images(self.rows[indices].numpy())).float() / 127.5 - 1

    @property
    def meta(self) -> DataMeta:
        """What a checkpoint keeps of this data set (rebuilding the generator needs nothing else)."""
        return DataMeta(self.shape, self.num_classes, list(self.classes or []),
                        self.centers.tolist() if self.centers is not None else None)


@dataclass(frozen=True)
class DataSpec:
    """A data set by name, with what the rest of ganflow may ask of it before loading it."""

    build: Callable[..., Dataset]  # (cfg: DataConfig, seed, storage: S3Options | None) -> Dataset
    kind: str  # "images" (N, C, H, W) in [-1, 1] | "points" (N, 2)
    labelled: bool = False  # can carry class labels: data.classes, conditional models
    needs_path: bool = False  # data.path names the files
    path_help: str = "a folder of PNG/JPEG files"  # what data.path should be, said when it is missing
    seeded: bool = False  # drawn from train.seed (its reference statistics depend on it)
    metrics: Tuple[str, ...] = ()  # what evaluation scores when eval.metrics is empty
    extractor: str = "inception"  # the feature extractor eval.extractor=auto picks
    # class names known before loading (data.classes is checked against them), or None
    known_classes: Callable[[DataConfig], Optional[List[str]]] = lambda cfg: None
    # what can be known of the files before Ray starts (ConfigError naming data.path), on the machine that
    # trains; (cfg, options: S3Options | None)
    check: Callable[..., None] = lambda cfg, options=None: None

    @property
    def is_image(self) -> bool:
        return self.kind == "images"


DATASETS: Dict[str, DataSpec] = {}


def register(name: str, **traits):
    def deco(fn):
        DATASETS[name] = DataSpec(fn, **traits)
        return fn

    return deco


def spec(name: str) -> DataSpec:
    """The registry entry of data.name (checked by ganflow.job before anything is built)."""
    return DATASETS[name]


def build_dataset(cfg: DataConfig, seed: int = 0, storage=None) -> Dataset:
    """`storage` (S3Options) reaches data sets read from s3://; the job's storage settings."""
    dataset = DATASETS[cfg.name].build(cfg, seed, storage)
    return select_classes(dataset, list(cfg.classes)) if cfg.classes else dataset


def select_classes(dataset: Dataset, keep: list) -> Dataset:
    """Only the samples of the `keep` classes, relabelled 0..len(keep)-1 in that order: a GAN
    trained on some classes, to score the others as anomalies (`ganflow score`)."""
    names = list(dataset.classes or [])
    missing = [c for c in keep if c not in names]
    if missing:
        raise ConfigError(f"data.classes: {missing} not among this data set's classes {names}")
    old = torch.tensor([names.index(c) for c in keep])
    mask = (dataset.y[:, None] == old[None, :])
    rows = mask.any(dim=1)
    y = mask[rows].long().argmax(dim=1)
    if dataset.source is not None:
        return Dataset(x=None, y=y, num_classes=len(keep), classes=list(keep), source=dataset.source,
                       rows=dataset.rows[rows])
    return Dataset(x=dataset.x[rows], y=y, num_classes=len(keep), classes=list(keep))


class BatchSampler:
    """Global batches drawn without replacement, epoch by epoch; each rank takes its share (`BatchPlan.rows`).

    Each epoch's permutation is drawn on the CPU (the same order on any device) and copied to
    `device` once, so a step's indices are a slice on the device: no host sync per step."""

    def __init__(self, n: int, plan: BatchPlan, seed: int, rank: int = 0, device: torch.device | str = "cpu"):
        problem = plan.problem()
        if problem:
            raise ValueError(": ".join(problem))
        self.n, self.batch, self.seed = n, plan.global_batch, seed
        self.rows = plan.rows(rank)
        self.device = torch.device(device)
        self._perms: Dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            g = torch.Generator().manual_seed(rng_seed(self.seed, STREAM_BATCHES, epoch))
            perm = torch.randperm(self.n, generator=g)
            cuda = self.device.type == "cuda"  # pinned + non_blocking: the copy does not sync the host
            self._perms[epoch] = (perm.pin_memory() if cuda else perm).to(self.device, non_blocking=cuda)
        return self._perms[epoch]

    def indices(self, batch_index: int) -> torch.Tensor:
        """This rank's sample indices for global batch number `batch_index` (on `device`)."""
        pos = batch_index * self.batch + self.rows.start
        end, parts = batch_index * self.batch + self.rows.stop, []
        while pos < end:  # a batch may straddle epochs (or several, for tiny data sets)
            epoch, offset = divmod(pos, self.n)
            take = min(end - pos, self.n - offset)
            parts.append(self._perm(epoch)[offset:offset + take])
            pos += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def xflip(x: torch.Tensor, seed: int, index: int, plan: BatchPlan, rank: int) -> torch.Tensor:
    """Half the images of global batch `index` mirrored left-right: which ones is drawn for the whole
    global batch from (seed, STREAM_XFLIP, index), and this rank takes its rows."""
    g = torch.Generator().manual_seed(rng_seed(seed, STREAM_XFLIP, index))
    flip = (torch.rand(plan.global_batch, generator=g) < 0.5)[plan.rows(rank)].to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def in_memory_batches(dataset: Dataset, plan: BatchPlan, seed: int, labels: bool, rank: int = 0,
                      device: torch.device | str = "cpu"):
    """`batches(index)` -> this rank's (images, labels or None) of global batch `index`, from a data
    set held in memory (copied to `device` once). `labels`: the model takes them."""
    sampler = BatchSampler(len(dataset), plan, seed, rank, device)
    x = dataset.x.to(device)
    y = dataset.y.to(device) if labels else None

    def batches(index: int):
        idx = sampler.indices(index)
        return x[idx], (y[idx] if y is not None else None)

    return batches


def flipped(batches, seed: int, plan: BatchPlan, rank: int):
    """`batches` with seeded horizontal flips (data.xflip), the same rows for any number of workers."""

    def flipped_batches(index: int):
        x, y = batches(index)
        return xflip(x, seed, index, plan, rank), y

    return flipped_batches
