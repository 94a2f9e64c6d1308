"""Anomaly detection with `ganflow score`: for each held-out digit, a DCGAN (jobs/quickstart.yaml)
trains on the train half of the other nine digits (`data.classes`), then every test-half image
is scored; AUROC tells the held-out digit (anomaly) from the nine (normal), for `disc` and `recon`.
The test half's normal images were never trained on. Also: scoring time with 1 and 2 Ray workers.

    python benchmarks/anomaly_auroc.py [--holdout 9 4] [--steps 8000] [--recon-steps 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.digits_split import train_run, write_split  # noqa: E402
from ganflow.commands.score import score_images  # noqa: E402
from ganflow.metrics.anomaly import ScoreSettings, mean_by_label  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--holdout", nargs="+", default=["9", "4"])
    p.add_argument("--steps", type=int, default=8000, help="GAN training steps")
    p.add_argument("--recon-steps", type=int, default=200)
    p.add_argument("--runs", nargs="*", default=None, help="reuse trained runs, one per --holdout digit")
    p.add_argument("--workers", action="store_true", help="also time recon with 2 Ray workers")
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ganflow-anomaly-"))
    split = write_split(scratch / "digits")
    print(f"digits split under {split}")
    settings = ScoreSettings(steps=args.recon_steps)
    for k, held in enumerate(args.holdout):
        normal = [str(d) for d in range(10) if str(d) != held]
        if args.runs:
            run = args.runs[k]
        else:
            started = time.perf_counter()
            run = train_run("quickstart.yaml", scratch / "runs", [
                "data.name=images", f"data.path={split / 'train'}", "data.channels=1", f"data.classes=[{','.join(normal)}]",
                f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}", f"train.sample_every={args.steps}"])
            print(f"held out {held}: trained {run} in {time.perf_counter() - started:.0f} s")
        for method in ("disc", "recon"):
            result = score_images(run, str(split / "test"), method, settings)
            means = mean_by_label(result["rows"])
            normal_mean = sum(means[c] for c in normal) / len(normal)
            print(f"held out {held}, {method}: AUROC {result['auroc']:.3f}; mean score {means[held]:.3f} (held out) vs "
                  f"{normal_mean:.3f} (the nine); {len(result['rows'])} images in {result['seconds']:.1f} s", flush=True)
        if args.workers:
            from ganflow.ray.cluster import ensure_ray

            ensure_ray()
            two = score_images(run, str(split / "test"), "recon", settings, workers=2)
            print(f"held out {held}, recon with 2 Ray workers: {two['seconds']:.1f} s, AUROC {two['auroc']:.3f}", flush=True)


if __name__ == "__main__":
    main()
