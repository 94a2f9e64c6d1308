"""`ganflow score`: anomaly scores of images under a trained GAN (higher: less like its data).

Two methods, registered by name:
- `disc`: minus the discriminator's logit (for a class-conditional D, of its most likely class).
  One forward pass; it only knows what D learnt to separate from G's samples.
- `recon`: latent-search reconstruction (AnoGAN, Schlegl et al. 2017): optimise z so G(z) matches
  the image, then score (1 - w) * mean|x - G(z)| + w * mean|f_D(x) - f_D(G(z))|, f_D being D's
  last feature map. A class-conditional G searches in the class D finds most likely.

Images are scored in fixed batches whose latents depend only on (seed, batch), so the scores are
the same in one process or across Ray workers (`--workers`).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ganflow.commands.common import RUN_ERRORS, die, resolve_location
from ganflow.present.progress import Progress
from ganflow.core.rng import rng_seed
from ganflow.data.images import IMAGE_SUFFIXES
from ganflow.run.generator import load_generator
from ganflow.store import NotFound, open_store

BATCH = 256


class ScoreError(ValueError):
    pass


@dataclass
class ScoreSettings:
    steps: int = 200  # recon: latent-search iterations
    lr: float = 0.05  # recon: Adam step size on z
    feature_weight: float = 0.1  # recon: w, the weight of the discriminator-feature distance
    seed: int = 0


@dataclass
class Images:
    x: torch.Tensor  # (N, C, H, W) in [-1, 1]
    labels: List[Optional[str]]  # class names (folder, npz label, digit), or None
    sources: List[str]  # where each image came from


# ---- the scores (pure torch) ---------------------------------------------------------------


def _best_class(D: torch.nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The class a conditional D scores highest for each image (None for an unconditional D)."""
    classes = D.num_classes
    if not classes:
        return None
    logits = torch.stack([D(x, torch.full((len(x),), k, dtype=torch.long, device=x.device)) for k in range(classes)], 1)
    return logits.argmax(1)


@torch.no_grad()
def disc_scores(G, D, x: torch.Tensor, start: int, s: ScoreSettings) -> Dict[str, torch.Tensor]:
    return {"score": -D(x, _best_class(D, x))}


def recon_scores(G, D, x: torch.Tensor, start: int, s: ScoreSettings) -> Dict[str, torch.Tensor]:
    with torch.no_grad():
        y = _best_class(D, x)
        target = D.features(x)
    g = torch.Generator().manual_seed(rng_seed(s.seed, 0x5C, start))
    z = torch.randn(len(x), G.nz, generator=g).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=s.lr)
    for p in list(G.parameters()) + list(D.parameters()):
        p.requires_grad_(False)

    def per_image(z):
        fake = G(z, y)
        residual = (x - fake).abs().flatten(1).mean(1)
        feature = (target - D.features(fake)).abs().flatten(1).mean(1)
        return residual, feature

    for _ in range(s.steps):
        residual, feature = per_image(z)
        # a sum, not a mean: each image's z gets its own gradient whatever the batch size
        loss = ((1 - s.feature_weight) * residual + s.feature_weight * feature).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        residual, feature = per_image(z)
    return {"score": (1 - s.feature_weight) * residual + s.feature_weight * feature,
            "residual": residual, "feature_distance": feature}


METHODS: Dict[str, Callable[..., Dict[str, torch.Tensor]]] = {"disc": disc_scores, "recon": recon_scores}


# ---- reading the images ----------------------------------------------------------------------


def read_images(location: str, sample_shape: tuple) -> Images:
    """A folder or s3:// prefix of PNG/JPEG (class folders give labels) or of npz files, one .npz
    (`ganflow sample`/`synth` format: `images`, optional `labels`), or a built-in data set by
    name (`digits`), shaped like the run's samples."""
    from ganflow.data import DATASETS

    if location in DATASETS and not DATASETS[location].needs_path and not Path(location).exists():
        return _builtin(location, sample_shape)
    if location.endswith(".npz"):
        parent, _, name = location.rstrip("/").rpartition("/")
        store = open_store(parent or ".")
        keys = [name]
    else:
        store = open_store(location.rstrip("/"))
        keys = store.list("")
    images = [k for k in keys if Path(k).suffix.lower() in IMAGE_SUFFIXES]
    arrays = sorted(k for k in keys if k.endswith(".npz"))
    try:
        if images:
            return _decode(store, images, sample_shape)
        if arrays:
            return _npz(store, arrays, sample_shape)
    except NotFound as err:
        raise ScoreError(f"--data: {err}") from None
    raise ScoreError(f"--data: no .png/.jpg/.jpeg or .npz under {store.uri()}; give a folder of images, an .npz, "
                     "or a built-in data set name (digits)")


def _builtin(name: str, sample_shape: tuple) -> Images:
    from ganflow.config import DataConfig
    from ganflow.data import build_dataset

    channels, resolution = sample_shape[0], sample_shape[-1]
    data = build_dataset(DataConfig(name=name, resolution=resolution, channels=channels))
    if data.x is None or tuple(data.shape) != tuple(sample_shape):
        raise ScoreError(f"--data: {name} does not give images shaped {tuple(sample_shape)}")
    names = data.classes or [str(k) for k in range(data.num_classes)]
    labels = [names[k] for k in data.y.tolist()] if data.y is not None else [None] * len(data.x)
    return Images(data.x, labels, [f"{name}[{i}]" for i in range(len(data.x))])


def _decode(store, keys: List[str], sample_shape: tuple) -> Images:
    from PIL import Image

    from ganflow.data.images import class_names, square_resize

    channels, resolution = sample_shape[0], sample_shape[-1]
    labelled = bool(class_names(keys, ""))
    arrays = []
    for key in keys:
        with Image.open(io.BytesIO(store.get_bytes(key))) as im:
            arrays.append(square_resize(im, resolution, channels))
    x = torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1
    labels = [k.rsplit("/", 2)[-2] if labelled else None for k in keys]
    return Images(x, labels, [store.uri(k) for k in keys])


def _npz(store, keys: List[str], sample_shape: tuple) -> Images:
    xs, labels, sources = [], [], []
    for key in keys:
        with np.load(io.BytesIO(store.get_bytes(key))) as arrays:
            if "images" not in arrays:
                raise ScoreError(f"--data: {store.uri(key)} has no `images` array (ganflow sample's npz format)")
            x = arrays["images"]
            if tuple(x.shape[1:]) != tuple(sample_shape):
                raise ScoreError(f"--data: {store.uri(key)} holds images shaped {tuple(x.shape[1:])}; "
                                 f"this run's are {tuple(sample_shape)}")
            xs.append(torch.from_numpy(x.astype(np.float32)))
            y = arrays["labels"].tolist() if "labels" in arrays else [None] * len(x)
            labels += [None if v is None else str(v) for v in y]
            sources += [f"{store.uri(key)}[{i}]" for i in range(len(x))]
    return Images(torch.cat(xs).clamp(-1, 1), labels, sources)


# ---- scoring, in process or across Ray workers ---------------------------------------------------


class BatchScorer:
    """Scores batches with one run's G and D; one per process (in-process, or a Ray actor)."""

    def __init__(self, run: str, method: str, settings: ScoreSettings, loaded=None):
        loaded = loaded or load_generator(run, with_discriminator=True)
        self.G, self.D = loaded.G, loaded.D
        self.fn, self.settings = METHODS[method], settings

    def score(self, x: torch.Tensor, start: int) -> Dict[str, np.ndarray]:
        out = self.fn(self.G, self.D, x, start, self.settings)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


def score_images(run: str, data: str, method: str = "disc", settings: ScoreSettings = ScoreSettings(),
                 workers: int = 1) -> Dict:
    """{"rows": [{index, source, label, score, ...}], "normal_classes", "auroc", "seconds"}."""
    if method not in METHODS:
        raise ScoreError(f"--method: {method!r}; choose one of {', '.join(METHODS)}")
    if workers < 1:
        raise ScoreError(f"--workers: must be >= 1, got {workers}")
    if settings.steps < 1 or not settings.lr > 0 or not 0 <= settings.feature_weight <= 1:
        raise ScoreError("--steps must be >= 1, --lr > 0 and --feature-weight in [0, 1]")
    location = resolve_location(run)  # once: every actor loads the same checkpoint
    loaded = load_generator(location, with_discriminator=True)
    shape = tuple(loaded.meta.sample_shape)
    if not loaded.meta.is_image or not hasattr(loaded.D, "features"):
        raise ScoreError("score: anomaly scores are for image models (a D with a feature map); this run's is "
                         f"{loaded.config.model.name}")
    images = read_images(data, shape)
    starts = list(range(0, len(images.x), BATCH))
    started = time.perf_counter()
    if workers == 1:
        scorer = BatchScorer(location, method, settings, loaded)
        scored = (scorer.score(images.x[i:i + BATCH], i) for i in starts)
    else:
        from ganflow.ray.pool import map_on_actors

        # a copy per batch: a slice pickles its whole storage, and each task would ship every image
        batches = [(images.x[i:i + BATCH].clone(), i) for i in starts]
        scored = map_on_actors(BatchScorer, (location, method, settings), "score", batches, workers, "score")
    parts = []
    with Progress(len(images.x), f"score ({method})", "images") as progress:
        for part in scored:
            parts.append(part)
            progress.update(len(part["score"]))
    seconds = time.perf_counter() - started
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    rows = [{"index": i, "source": images.sources[i], "label": images.labels[i] if images.labels[i] is not None else "",
             **{k: float(v[i]) for k, v in columns.items()}} for i in range(len(images.x))]
    normal = list(loaded.meta.classes)
    return {"rows": rows, "normal_classes": normal, "auroc": auroc(rows, normal), "seconds": seconds,
            "method": method, "checkpoint": loaded.location}


def auroc(rows: List[Dict], normal: List[str]) -> Optional[float]:
    """Area under the ROC curve for telling the images whose label is not one of the run's classes
    (the anomalies) from those whose label is; None unless the data holds both kinds."""
    if not normal or any(r["label"] == "" for r in rows):
        return None
    anomalous = [r["label"] not in normal for r in rows]
    if all(anomalous) or not any(anomalous):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(anomalous, [r["score"] for r in rows]))


def write_csv(rows: List[Dict], out: str) -> None:
    """Written whole or not at all (a local rename, or one S3 PUT)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    parent, sep, name = str(out).rpartition("/")
    open_store(parent or sep or ".").put_bytes(name, buf.getvalue().encode())


def mean_by_label(rows: List[Dict]) -> Dict[str, float]:
    groups: Dict[str, List[float]] = {}
    for r in rows:
        groups.setdefault(r["label"] or "all", []).append(r["score"])
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def main(args) -> int:
    import sys

    settings = ScoreSettings(steps=args.steps, lr=args.lr, feature_weight=args.feature_weight, seed=args.seed)
    try:
        result = score_images(args.run, args.data, args.method, settings, args.workers)
        write_csv(result["rows"], args.out)
    except (*RUN_ERRORS, ScoreError) as err:
        return die(str(err))
    rows = result["rows"]
    means = ", ".join(f"{k}: {v:.3f}" for k, v in mean_by_label(rows).items())
    print(f"{len(rows)} images scored ({args.method}) in {result['seconds']:.1f} s with {args.workers} worker(s); "
          f"mean score by label: {means}", file=sys.stderr)
    if result["auroc"] is not None:
        print(f"AUROC {result['auroc']:.3f} (anomalies: labels outside the run's classes "
              f"{', '.join(result['normal_classes'])})", file=sys.stderr)
    print(args.out)
    return 0
