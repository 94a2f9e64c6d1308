"""`ganflow synth`: a labelled synthetic data set drawn from a trained generator, written to a
folder or an `s3://` prefix, with a manifest that makes it reproducible.

The set is cut into shards (one class, at most SHARD_SIZE samples each) whose latents depend
only on (seed, shard), so the files are the same whether one process or many Ray workers draw
them. PNG output is one folder per class (`data.name=images` reads the folders back as labels);
npz output is one file per shard in `ganflow sample`'s format. The manifest goes last: a
location with a manifest is complete.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from ganflow.commands.common import RUN_ERRORS, die, resolve_location
from ganflow.present.pictures import image_png
from ganflow.present.progress import Progress
from ganflow.core.rng import SampleNoise, rng_seed
from ganflow.core.state import DataMeta
from ganflow.run.generator import load_generator
from ganflow.store import open_store
from ganflow.store.names import part

SHARD_SIZE = 500
TRUNCATION_MIN = 0.1  # |z| <= 0.1 keeps 8% of the draws: a few rounds of redrawing
MANIFEST = "synth.json"
FORMATS = ("png", "npz")


class SynthError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    index: int
    label: Optional[int]  # None: an unconditional generator
    start: int  # the first sample's number within its class
    count: int


def plan(num: Optional[int], per_class: Optional[int], num_classes: int) -> List[Shard]:
    """`--per-class K`: K of every class; `--num N`: N in all, split evenly over the classes."""
    if (num is None) == (per_class is None):
        raise SynthError("give --num N or --per-class K (one of them)")
    if per_class is not None:
        if not num_classes:
            raise SynthError("--per-class: this generator is not class-conditional; use --num")
        if per_class <= 0:
            raise SynthError(f"--per-class: must be > 0, got {per_class}")
        counts = [per_class] * num_classes
    else:
        if num <= 0:
            raise SynthError(f"--num: must be > 0, got {num}")
        if num < num_classes:  # a class without images would renumber the classes after it when read back
            raise SynthError(f"--num: {num} is fewer than the generator's {num_classes} classes; give at least one per class")
        parts = max(num_classes, 1)
        counts = [num // parts + (k < num % parts) for k in range(parts)]
    shards: List[Shard] = []
    for k, count in enumerate(counts):
        for start in range(0, count, SHARD_SIZE):
            shards.append(Shard(len(shards), k if num_classes else None, start, min(SHARD_SIZE, count - start)))
    return shards


def truncated_normal(n: int, nz: int, truncation: Optional[float], g: torch.Generator) -> torch.Tensor:
    """N(0, 1) latents; with a truncation T, every entry beyond +-T is redrawn (the 'truncation
    trick': fewer, more typical samples)."""
    z = torch.randn(n, nz, generator=g)
    if truncation is None:
        return z
    while True:
        outside = z.abs() > truncation
        if not outside.any():
            return z
        z[outside] = torch.randn(int(outside.sum()), generator=g)


def class_folder_names(meta: DataMeta, num_classes: int) -> List[str]:
    """The run's own class names when it was trained on class folders; else zero-padded numbers,
    which sort in class order (the images data set numbers classes by sorted folder name)."""
    names = meta.classes
    if len(names) == num_classes and sorted(names) == list(names):
        return [part(n, "the checkpoint's class name") for n in names]  # not covered by a checksum
    width = len(str(max(num_classes - 1, 0)))
    return [f"{k:0{width}d}" for k in range(num_classes)] if num_classes else ["all"]


@torch.no_grad()
def draw(G: torch.nn.Module, shard: Shard, seed: int, truncation: Optional[float]) -> tuple:
    """(images float32 in [-1, 1], labels int64 or None) of one shard."""
    g = torch.Generator().manual_seed(rng_seed(seed, 0x5F, shard.index))
    z = truncated_normal(shard.count, G.nz, truncation, g)
    y = None if shard.label is None else torch.full((shard.count,), shard.label, dtype=torch.int64)
    device = next(G.parameters()).device
    noise = {"noise": SampleNoise(rng_seed(seed, 0x5F, shard.index), 0, shard.count)} if getattr(G, "random_inputs", False) else {}
    x = G(z.to(device), None if y is None else y.to(device), **noise).float().cpu().clamp(-1, 1)
    if x.dim() != 4:
        raise SynthError("synth: this run's generator makes 2D points, not images; use `ganflow sample --out x.npz`")
    return x, y


class ShardWriter:
    """Draws shards and writes their files; one per process (in-process, or a Ray actor)."""

    def __init__(self, run: str, out: str, fmt: str, seed: int, truncation: Optional[float], folders: List[str]):
        self.G = load_generator(run).G
        self.store = open_store(out)
        self.fmt, self.seed, self.truncation, self.folders = fmt, seed, truncation, folders

    def write(self, shard: Shard) -> int:
        x, y = draw(self.G, shard, self.seed, self.truncation)
        if self.fmt == "png":
            folder = self.folders[shard.label or 0]
            for i in range(shard.count):
                self.store.put_bytes(f"{folder}/{shard.start + i:07d}.png", image_png(x[i]))
        else:
            buf = io.BytesIO()
            arrays = {"images": x.numpy().astype(np.float32)}
            if y is not None:
                arrays["labels"] = y.numpy()
            np.savez(buf, **arrays)
            self.store.put_bytes(f"shard_{shard.index:05d}.npz", buf.getvalue())
        return shard.count


def synthesize(run: str, out: str, num: Optional[int] = None, per_class: Optional[int] = None, fmt: str = "png",
               truncation: Optional[float] = None, seed: int = 0, workers: int = 1) -> Dict:
    """Write the set; returns its manifest. `workers` > 1: that many Ray actors draw the shards."""
    if fmt not in FORMATS:
        raise SynthError(f"--format: {fmt!r}; choose one of {', '.join(FORMATS)}")
    if truncation is not None and not truncation >= TRUNCATION_MIN:
        raise SynthError(f"--truncation: must be >= {TRUNCATION_MIN} (below it almost every draw is redrawn, "
                         f"for ever), got {truncation}")
    if workers < 1:
        raise SynthError(f"--workers: must be >= 1, got {workers}")
    store = open_store(out)
    if store.list(""):
        raise SynthError(f"--out: {store.uri()} is not empty; give a new location (nothing was written)")
    location = resolve_location(run)  # once: every actor loads the same checkpoint
    loaded = load_generator(location)
    if not loaded.meta.is_image:
        raise SynthError("synth: this run's generator makes 2D points, not images; use `ganflow sample --out x.npz`")
    classes = loaded.G.num_classes
    shards = plan(num, per_class, classes)
    folders = class_folder_names(loaded.meta, classes)
    args = (location, str(out), fmt, seed, truncation, folders)
    started = time.perf_counter()
    if workers == 1:
        writer = ShardWriter(*args)
        written = (writer.write(s) for s in shards)
    else:
        from ganflow.ray.pool import map_on_actors

        written = map_on_actors(ShardWriter, args, "write", [(s,) for s in shards], workers, "synth")
    total = 0
    with Progress(sum(s.count for s in shards), "synth", "images") as progress:
        for count in written:
            total += count
            progress.update(count)
    seconds = time.perf_counter() - started
    counts = {folders[k] if classes else "all": 0 for k in range(max(classes, 1))}
    for s in shards:
        counts[folders[s.label] if classes else "all"] += s.count
    manifest = {
        "run": str(run), "checkpoint": loaded.location, "step": loaded.step, "seed": seed, "truncation": truncation,
        "format": fmt, "num_classes": classes, "classes": folders if classes else [], "counts": counts, "total": total,
        "sample_shape": list(loaded.meta.sample_shape), "shard_size": SHARD_SIZE,
        "shards": [asdict(s) for s in shards],
        "layout": "CLASS/NNNNNNN.png" if fmt == "png" else "shard_NNNNN.npz (images float32 in [-1, 1], labels int64)",
        "seconds": round(seconds, 3), "workers": workers,
    }
    store.put_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def main(args) -> int:
    import sys

    try:
        manifest = synthesize(args.run, args.out, num=args.num, per_class=args.per_class, fmt=args.format,
                              truncation=args.truncation, seed=args.seed, workers=args.workers)
    except (*RUN_ERRORS, SynthError) as err:
        return die(str(err))
    rate = manifest["total"] / max(manifest["seconds"], 1e-9)
    print(f"{manifest['total']} images ({', '.join(f'{k}: {v}' for k, v in manifest['counts'].items())}) in "
          f"{manifest['seconds']:.1f} s, {rate:.0f} images/s with {args.workers} worker(s)", file=sys.stderr)
    print(args.out)
    return 0
