"""`ganflow score`: anomaly scores of images under a trained GAN (higher: less like its data).
The scores are `ganflow.metrics.anomaly`'s; the images are read by `ganflow.data.readers`.

Images are scored in fixed batches whose latents depend only on (seed, batch), so the scores are
the same in one process or across Ray workers (`--workers`).
"""

from __future__ import annotations

import csv
import io
import time
from typing import Dict, List

import numpy as np
import torch

from ganflow.commands.common import RUN_ERRORS, die, resolve_location
from ganflow.data.readers import ImagesError, read_images
from ganflow.metrics.anomaly import METHODS, ScoreSettings, auroc, mean_by_label
from ganflow.present.progress import Progress
from ganflow.run.generator import load_generator
from ganflow.store import open_store

__all__ = ["ScoreError", "ScoreSettings", "score_images", "write_csv", "mean_by_label", "main"]

BATCH = 256


class ScoreError(ValueError):
    pass


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
    try:
        images = read_images(data, shape)
    except ImagesError as err:
        raise ScoreError(f"--data: {err}") from None
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


def write_csv(rows: List[Dict], out: str) -> None:
    """Written whole or not at all (a local rename, or one S3 PUT)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    parent, sep, name = str(out).rpartition("/")
    open_store(parent or sep or ".").put_bytes(name, buf.getvalue().encode())


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
