"""Commands that start their own local Ray at the same moment on one machine (issue 30, fault 13):
`--rounds` rounds of three `ganflow train jobs/ring.yaml train.steps=1` started together, and of a
train beside a 2-worker `ganflow data prepare`; prints how many of each completed and the seconds a
round took. Run with nothing else on the machine:

    python benchmarks/concurrent_starts.py --rounds 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def ganflow(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "ganflow.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def round_of(commands) -> tuple:
    started = time.perf_counter()
    procs = [ganflow(*c) for c in commands]
    codes = [p.wait(timeout=600) for p in procs]
    return sum(c == 0 for c in codes), len(codes), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "images"
        source.mkdir()
        for i in range(20):
            Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(source / f"{i}.png")

        def train(k, r):
            return ("train", "jobs/ring.yaml", "train.steps=1", f"storage.uri={tmp}/runs{r}-{k}", "tracking.wandb.mode=disabled")

        def prepare(r):
            return ("data", "prepare", str(source), "--out", f"{tmp}/set{r}", "--resolution", "16", "--reference", "none",
                    "--workers", "2", "--shard-size", "5")

        for name, make in (("3 x train", lambda r: [train(k, r) for k in range(3)]),
                           ("train + data prepare", lambda r: [train(9, r), prepare(r)])):
            done = total = 0
            seconds = []
            for r in range(args.rounds):
                ok, n, s = round_of(make(r))
                done, total = done + ok, total + n
                seconds.append(s)
            print(f"{name}: {done}/{total} completed in {args.rounds} rounds; a round {np.median(seconds):.1f} s "
                  f"(median, max {max(seconds):.1f} s)")


if __name__ == "__main__":
    main()
