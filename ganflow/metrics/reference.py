"""Reference statistics of the real data: features of up to eval.reference_samples real images
(a fixed subset), their mean and covariance. Extracted once per data set and extractor, each
worker extracting its share, and cached in storage under `<storage.uri>/.reference/`, keyed by
what changes them (data set, resolution, extractor weights, count), so every later evaluation and
every run on the same data reads them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ganflow.core.progress import Progress
from ganflow.data import spec
from ganflow.metrics.kernels import feature_stats

log = logging.getLogger(__name__)
CHUNK = 1000  # real images read and extracted at a time


@dataclass
class Reference:
    features: torch.Tensor  # (n, D) float32
    mu: np.ndarray
    sigma: np.ndarray

    def to_bytes(self, meta: dict) -> bytes:
        from safetensors.torch import save

        tensors = {"features": self.features.contiguous(), "mu": torch.from_numpy(self.mu), "sigma": torch.from_numpy(self.sigma)}
        return save(tensors, metadata={"ganflow": json.dumps(meta)})

    @classmethod
    def from_bytes(cls, data: bytes) -> "Reference":
        from safetensors.torch import load

        t = load(data)
        return cls(t["features"], t["mu"].numpy(), t["sigma"].numpy())


def cache_key(cfg, extractor) -> str:
    d = cfg.data
    identity = {"data": d.name, "path": d.path, "resolution": d.resolution, "channels": d.channels,
                **({"classes": list(d.classes)} if d.classes else {}), "extractor": extractor.name, "weights": extractor.digest, "n": cfg.eval.reference_samples,
                "seed": cfg.train.seed if spec(d.name).seeded else None}
    return f"{d.name}-{extractor.name}-{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]}"


def _reference_store(cfg, storage):
    from ganflow.store import S3Options, open_store

    return open_store(cfg.storage.uri, storage or S3Options())


def real_images(cfg, storage, limit: int):
    """(count, take(rows) -> images in [-1, 1]): a fixed subset of at most `limit` real images,
    read by rows so each worker loads only its share (s3:// folders object by object)."""
    from ganflow.data import build_dataset
    from ganflow.data.images import _list_images, square_resize
    from ganflow.store import S3Options, is_s3
    from ganflow.store.s3 import S3Store

    def subset(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values if n > limit else torch.arange(n)

    if not is_s3(cfg.data.path or ""):
        data = build_dataset(cfg.data, cfg.train.seed, storage)
        pick = subset(len(data))
        return len(pick), lambda rows: data.x[pick[rows]]
    from PIL import Image

    storage = storage or S3Options()
    keys = _list_images(cfg.data.path, storage)  # the one listing of a streamed folder
    pick = subset(len(keys))
    store = S3Store(cfg.data.path.rstrip("/"), storage)
    channels = cfg.data.channels or 3

    def take(rows):
        arrays = []
        for i in pick[rows].tolist():
            with Image.open(io.BytesIO(store.get_bytes(keys[i]))) as im:
                arrays.append(square_resize(im, cfg.data.resolution, channels))
        return torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1

    return len(pick), take


def load_or_build(cfg, extractor, storage, rank: int, world: int,
                  gather: Callable[[torch.Tensor], torch.Tensor], progress: bool = False) -> Optional[Reference]:
    """Rank 0's reference (None on other ranks). Every rank calls it: rank 0 decides whether the
    cache holds it, and if not, every rank extracts its share of the real images."""
    import torch.distributed as dist

    key = f".reference/{cache_key(cfg, extractor)}.safetensors"
    store = _reference_store(cfg, storage)
    cached = None
    if rank == 0:
        try:
            cached = Reference.from_bytes(store.get_bytes(key)) if store.exists(key) else None
        except Exception as err:  # noqa: BLE001 - a torn or unreadable cache is rebuilt
            log.warning("reference statistics %s unreadable (%s); extracting them again", store.uri(key), err)
    have = torch.tensor([cached is not None], dtype=torch.int64)
    if world > 1 and dist.is_initialized():
        if dist.get_backend() == "nccl":
            have = have.cuda()
        dist.broadcast(have, src=0)
    if bool(have.item()):
        return cached
    count, take = real_images(cfg, storage, cfg.eval.reference_samples)
    start, stop = count * rank // world, count * (rank + 1) // world
    parts = []
    with Progress(stop - start, "reference statistics", "real images") if progress else contextlib.nullcontext() as bar:
        for first in range(start, stop, CHUNK) or [start]:
            parts.append(extractor.extract(take(slice(first, min(first + CHUNK, stop))))[0])
            if bar is not None:
                bar.update(len(parts[-1]))
    features = gather(torch.cat(parts))
    if rank != 0:
        return None
    ref = Reference(features, *feature_stats(features.numpy()))
    meta = {"data": cfg.data.name, "path": cfg.data.path, "resolution": cfg.data.resolution, "count": count,
            "extractor": extractor.name, "protocol": extractor.protocol, "weights": extractor.digest}
    try:
        store.put_bytes(key, ref.to_bytes(meta))
    except Exception as err:  # noqa: BLE001 - a read-only storage only costs the next evaluation the extraction
        log.warning("could not cache reference statistics at %s: %s", store.uri(key), err)
    return ref
