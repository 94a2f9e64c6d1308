"""Prepared data sets: prepare throughput, and training read from a prepared set against the same
recipe on in-memory tensors, in one process.

    python benchmarks/prepared.py prepare [--num 20000] [--size 256] [--workers 1 2] [--s3]
    python benchmarks/prepared.py train [--steps 300]

`prepare` writes `--num` synthetic JPEGs (smooth random colour fields of 1.5 x --size by 1.25 x
--size px, so every image is cropped and downscaled, quality 90) once into a scratch folder, then times `ganflow data prepare` on them at --size (no reference
statistics) with each worker count, to a local folder and, with --s3, from and to a bucket on a
loopback moto server. Images/s counts source images over the whole command (Ray's start included).

`train` runs the quickstart recipe (DCGAN on digits, 32 px, batch 64) with ganflow's `fit` on
batches from the in-memory digits and from the same digits prepared (1797 PNGs at 8 px, prepared
to 32 px, so the pixels differ slightly: Lanczos vs bilinear) and prints the ratio of steady-state
images/s, alternating the two three times.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def make_jpegs(folder: Path, num: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((size * 3 // 2 + i % 7, size * 5 // 4), Image.Resampling.BICUBIC)
        im.save(folder / f"{i:06d}.jpg", quality=90)


def run_prepare(source: str, out: str, size: int, workers: int, env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ganflow.cli", "data", "prepare", source, "--out", out,
                           "--resolution", str(size), "--workers", str(workers), "--reference", "none"],
                          capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - started


def prepare(args) -> None:
    with tempfile.TemporaryDirectory(prefix="ganflow-bench-") as tmp:
        src = Path(tmp) / "src"
        t = time.perf_counter()
        make_jpegs(src, args.num, args.size)
        mb = sum(p.stat().st_size for p in src.iterdir()) / 2**20
        print(f"{args.num} JPEGs of {args.size}px ({mb:.0f} MB) written in {time.perf_counter() - t:.0f} s")
        for w in args.workers:
            seconds = run_prepare(str(src), f"{tmp}/out-{w}", args.size, w, {"RAY_ADDRESS": ""})
            print(f"local -> local, {w} worker(s): {seconds:.1f} s, {args.num / seconds:.0f} images/s")
        if args.s3:
            import logging

            import boto3
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
            server.start()
            endpoint = f"http://127.0.0.1:{server._server.server_port}"
            env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                   "AWS_DEFAULT_REGION": "us-east-1", "RAY_ADDRESS": ""}
            os.environ.update({k: v for k, v in env.items() if k != "RAY_ADDRESS"})
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="bench")
            for p in src.iterdir():
                client.upload_file(str(p), "bench", f"src/{p.name}")
            for w in args.workers:
                seconds = run_prepare("s3://bench/src", f"s3://bench/out-{w}", args.size, w, env)
                print(f"s3 -> s3 (loopback moto), {w} worker(s): {seconds:.1f} s, {args.num / seconds:.0f} images/s")
            server.stop()


def train(args) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    from ganflow.core.fit import fit
    from ganflow.job import batches_for, build_training, load_job

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="ganflow-bench-") as tmp:
        bunch = load_digits()
        for i, (image, label) in enumerate(zip(bunch.images, bunch.target)):
            (Path(tmp) / "src" / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255 / 16).astype(np.uint8), "L").save(Path(tmp) / "src" / str(label) / f"{i:04d}.png")
        subprocess.run([sys.executable, "-m", "ganflow.cli", "data", "prepare", f"{tmp}/src", "--out", f"{tmp}/set",
                        "--resolution", "32", "--channels", "1", "--workers", "1", "--reference", "none"], check=True,
                       capture_output=True)
        jobs = {"in-memory": [], "prepared": ["data.name=prepared", f"data.path={tmp}/set", "data.classes=null"]}
        rates = {k: [] for k in jobs}
        for _ in range(3):
            for name, overrides in jobs.items():
                cfg = load_job(ROOT / "jobs" / "quickstart.yaml", [f"train.steps={args.steps}", f"storage.uri={tmp}/runs",
                                                                 *overrides])
                data, state = build_training(cfg, torch.device("cpu"))
                batches = batches_for(cfg, data)
                warm = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=20))
                fit(warm, state, batches)  # warm-up
                t = time.perf_counter()
                fit(cfg, state, batches)
                rates[name].append((args.steps - 20) * cfg.train.batch_size / (time.perf_counter() - t))
        for name, r in rates.items():
            print(f"{name}: {statistics.median(r):.0f} images/s (runs {', '.join(f'{v:.0f}' for v in r)})")
        ratio = statistics.median(rates["prepared"]) / statistics.median(rates["in-memory"])
        print(f"prepared / in-memory: {ratio:.3f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--num", type=int, default=20000)
    a.add_argument("--size", type=int, default=256)
    a.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a.add_argument("--s3", action="store_true")
    b = sub.add_parser("train")
    b.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    prepare(args) if args.what == "prepare" else train(args)


if __name__ == "__main__":
    main()
