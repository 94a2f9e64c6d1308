"""Time from `ganflow submit` to the job's first training step on a local Ray cluster (`ray start
--head` on loopback), and the Jobs path's overhead against `ganflow train` of the same job with an
in-process Ray, both timed from the command's start in this process.

    python benchmarks/submit_latency.py [--steps 400] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ray_head import start_head, stop_head  # noqa: E402

FIRST_STEP = "[ganflow] step "


def timed(cmd, env) -> dict:
    """Seconds from start to the first training-step line the command prints (the worker's line,
    forwarded by Ray: to stdout for `train`, through the job's log for `submit`), and to
    its end."""
    started = time.perf_counter()
    first = None
    tail = []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if first is None and FIRST_STEP in line:
            first = time.perf_counter() - started
        tail = (tail + [line])[-20:]
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} exited {proc.returncode}:\n{''.join(tail)}")
    return {"first_step_s": float("nan") if first is None else first, "total_s": time.perf_counter() - started}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ganflow-submit-bench-"))
    job = [str(ROOT / "jobs" / "ring.yaml"), f"storage.uri={scratch / 'runs'}", f"train.steps={args.steps}",
           "train.log_every=100", f"train.checkpoint_every={args.steps}", "train.sample_every=100000"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(scratch), WANDB_SILENT="true")
    head, address = start_head(scratch / "head.log")
    try:
        for i in range(args.repeat):
            local = timed([sys.executable, "-m", "ganflow.cli", "train", *job], env)
            jobs = timed([sys.executable, "-m", "ganflow.cli", "submit", *job, "--address", address], env)
            print(f"run {i}: ganflow train (in-process Ray): first step {local['first_step_s']:.1f} s, done {local['total_s']:.1f} s | "
                  f"ganflow submit (Jobs API, running cluster): first step {jobs['first_step_s']:.1f} s, done {jobs['total_s']:.1f} s | "
                  f"submit/train: first step x{jobs['first_step_s'] / local['first_step_s']:.2f}, "
                  f"total x{jobs['total_s'] / local['total_s']:.2f}", flush=True)
    finally:
        stop_head(head)


if __name__ == "__main__":
    main()
