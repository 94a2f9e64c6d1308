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
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ganflow.present.progress import Progress
from ganflow.data import spec
from ganflow.metrics.kernels import feature_stats

log = logging.getLogger(__name__)
CHUNK = 1000  # real images read and extracted at a time


@dataclass
class Reference:
    features: torch.Tensor  # (n, D) float32; (0, D) when only the statistics are known (a published .npz)
    mu: np.ndarray
    sigma: np.ndarray
    description: str = ""  # which reference this is, reported with every evaluation

    def to_bytes(self, meta: dict) -> bytes:
        from safetensors.torch import save

        tensors = {"features": self.features.contiguous(), "mu": torch.from_numpy(self.mu), "sigma": torch.from_numpy(self.sigma)}
        return save(tensors, metadata={"ganflow": json.dumps(meta)})

    @classmethod
    def from_bytes(cls, data: bytes, description: str = "") -> "Reference":
        from safetensors.torch import load

        t = load(data)
        return cls(t["features"], t["mu"].numpy(), t["sigma"].numpy(), description)


class ReferenceFileError(ValueError):
    """eval.reference cannot be read as published statistics."""


KEEP_FEATURES = 10000  # features a prepared set's reference keeps for KID and PR (mu and sigma are over all)


def _extractor_for(name: str, weights: Optional[str], storage, device="cpu"):
    from ganflow.config.schema import EvalConfig
    from ganflow.metrics.features import EXTRACTORS

    return EXTRACTORS[name](EvalConfig(extractor=name, inception_weights=weights), storage, torch.device(device))


def check_prepared_reference(extractor: str, weights: Optional[str], storage) -> None:
    """The extractor's weights can be found (InceptionWeightsError otherwise), before a prepare writes."""
    if extractor == "inception":
        from ganflow.metrics.inception import find_weights

        find_weights(weights, storage)


class ReferencePart:
    """Feature sums of some images of a prepared set; one per process (in-process or a Ray actor:
    the extractor is loaded once)."""

    def __init__(self, location: str, storage, extractor: str, weights: Optional[str]):
        from ganflow.data.prepared import PreparedSet

        self.source = PreparedSet(location, storage)
        self.extractor = _extractor_for(extractor, weights, storage)

    def stats(self, rows: np.ndarray, keep: int) -> tuple:
        """(sum, sum of outer products, count, the first `keep` rows' features, the extractor's
        name/protocol/weights) of these images."""
        s1, s2 = np.zeros(self.extractor.dim), np.zeros((self.extractor.dim, self.extractor.dim))
        kept = []
        for first in range(0, len(rows), CHUNK // 4):
            x = torch.from_numpy(self.source.images(rows[first:first + CHUNK // 4])).float() / 127.5 - 1
            f = self.extractor.extract(x)[0].double().numpy()
            s1 += f.sum(0)
            s2 += f.T @ f
            kept.append(f[:max(0, keep - first)])
        ex = self.extractor
        return (s1, s2, len(rows), torch.from_numpy(np.concatenate(kept)).float(),
                {"extractor": ex.name, "protocol": ex.protocol, "weights": ex.digest})


def reference_plan(total: int, n: int, parts: int) -> List[Tuple[np.ndarray, int]]:
    """(rows, features to keep) per piece of work: the first `n` images (0: all) of a fixed shuffle,
    in contiguous pieces; the features of the first KEEP_FEATURES of them are kept."""
    count = total if n == 0 else min(n, total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(0))[:count].sort().values.numpy()
    size = max(CHUNK // 4, -(-count // max(1, parts)))
    return [(order[i:i + size], max(0, min(size, KEEP_FEATURES - i))) for i in range(0, count, size)]


def reference_for_prepared(location: str, storage, extractor: str, weights: Optional[str], n: int,
                           parts: int = 1, mapper: Optional[Callable] = None, progress: bool = True) -> dict:
    """Reference statistics of a prepared set over its first `n` images of a fixed shuffle (0: all),
    stored beside the shards; the manifest is rewritten to name them. Returns the manifest.
    `mapper(cls, init_args, method, items)` runs the pieces elsewhere (the CLI's Ray actors), in
    order; by default they run here. The sums are added in piece order either way."""
    from ganflow.data.prepared import MANIFEST, read_manifest, reference_name
    from ganflow.store import open_store

    manifest = read_manifest(location, storage)
    init = (location, storage, extractor, weights)
    plan = reference_plan(int(manifest["count"]), n, parts)
    if mapper is None:
        part = ReferencePart(*init)
        done = (part.stats(*item) for item in plan)
    else:
        done = mapper(ReferencePart, init, "stats", plan)
    count, s1, s2, kept, made_with = 0, 0.0, 0.0, [], {}
    with Progress(sum(len(r) for r, _ in plan), f"reference statistics ({extractor})", "images") \
            if progress else contextlib.nullcontext() as bar:
        for p1, p2, m, features, made_with in done:
            s1, s2, count = s1 + p1, s2 + p2, count + m
            kept.append(features)
            if bar is not None:
                bar.update(m)
    mu = s1 / count
    sigma = (s2 - count * np.outer(mu, mu)) / max(count - 1, 1)
    ref = Reference(torch.cat(kept), mu, sigma)
    meta = {"count": count, **made_with}  # what the pieces were extracted with (no extractor loaded here)
    store = open_store(location, storage)
    store.put_bytes(reference_name(extractor), ref.to_bytes({"location": location, **meta}))
    manifest["reference"] = {**manifest.get("reference", {}), extractor: meta}
    store.put_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def from_npz(location: str, storage) -> Reference:
    """Published reference statistics (`mu`, `sigma` in an .npz: pytorch-fid's and the papers' format),
    from a path or an s3:// URI. FID only: the features behind them are not in the file."""
    from pathlib import Path

    from ganflow.store import S3Options, is_s3, open_store, split_s3

    try:
        if is_s3(location):
            bucket, key = split_s3(location)
            data = open_store(f"s3://{bucket}", storage or S3Options()).get_bytes(key)
        else:
            data = Path(location).expanduser().read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
    except KeyError as err:
        raise ReferenceFileError(f"eval.reference: {location} has no {err} array; an .npz of mu and sigma is expected") from None
    except Exception as err:  # noqa: BLE001 - unreadable in any way: the same one-line answer
        raise ReferenceFileError(f"eval.reference: cannot read {location} as an .npz of mu and sigma "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ReferenceFileError(f"eval.reference: {location} holds mu {mu.shape} and sigma {sigma.shape}; expected (D,) and (D, D)")
    return Reference(torch.zeros(0, len(mu)), mu, sigma, f"{location} (published statistics, mu and sigma only)")


def prepared_reference(cfg, extractor, storage) -> Optional[Reference]:
    """The reference a prepared set carries for this extractor and weights (all of it, not
    data.classes' subset: None then), or None."""
    if cfg.data.name != "prepared" or cfg.data.classes:
        return None
    from ganflow.data.prepared import read_manifest, reference_name
    from ganflow.store import open_store

    entry = read_manifest(cfg.data.path, storage).get("reference", {}).get(extractor.name)
    if not entry or entry.get("weights") != extractor.digest:
        return None
    store = open_store(cfg.data.path, storage)
    return Reference.from_bytes(store.get_bytes(reference_name(extractor.name)),
                                f"prepared set {cfg.data.path} ({entry['count']} images)")


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
    from ganflow.data.images import _list_images, decode_image
    from ganflow.store import S3Options
    from ganflow.store.s3 import S3Store

    def subset(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values if n > limit else torch.arange(n)

    data = build_dataset(cfg.data, cfg.train.seed, storage)
    if not data.streamed:  # in memory, or a prepared set read image by image
        pick = subset(len(data))
        return len(pick), lambda rows: data.take(pick[rows])
    storage = storage or S3Options()
    keys = _list_images(cfg.data.path, storage)  # the one listing of a streamed folder
    pick = subset(len(keys))
    store = S3Store(cfg.data.path.rstrip("/"), storage)
    channels = cfg.data.channels or 3

    def take(rows):
        arrays = []
        for i in pick[rows].tolist():
            arrays.append(decode_image(store.get_bytes(keys[i]), store.uri(keys[i]), cfg.data.resolution, channels))
        return torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1

    return len(pick), take


def load_or_build(cfg, extractor, storage, rank: int, world: int,
                  gather: Callable[[torch.Tensor], torch.Tensor], progress: bool = False) -> Optional[Reference]:
    """Rank 0's reference (None on other ranks). Every rank calls it: rank 0 decides whether the
    cache holds it, and if not, every rank extracts its share of the real images."""
    import torch.distributed as dist

    if cfg.eval.reference:  # published statistics: read by rank 0, nothing to extract
        return from_npz(cfg.eval.reference, storage) if rank == 0 else None
    key = f".reference/{cache_key(cfg, extractor)}.safetensors"
    store = _reference_store(cfg, storage)
    cached = None
    if rank == 0:
        cached = prepared_reference(cfg, extractor, storage)
        try:
            if cached is None and store.exists(key):
                cached = Reference.from_bytes(store.get_bytes(key), f"{store.uri(key)} ({cfg.eval.reference_samples} "
                                                                    "real images at most)")
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
    ref = Reference(features, *feature_stats(features.numpy()), f"{store.uri(key)} ({count} real images)")
    meta = {"data": cfg.data.name, "path": cfg.data.path, "resolution": cfg.data.resolution, "count": count,
            "extractor": extractor.name, "protocol": extractor.protocol, "weights": extractor.digest}
    try:
        store.put_bytes(key, ref.to_bytes(meta))
    except Exception as err:  # noqa: BLE001 - a read-only storage only costs the next evaluation the extraction
        log.warning("could not cache reference statistics at %s: %s", store.uri(key), err)
    return ref
