"""Start-up latency: wall time from `ganflow train` to its first optimizer step and to exit, for a
1-step ring run on the in-process Ray, by phase, beside two floors measured in the same run:

- plain: `python -c` that imports torch and takes one optimizer step of a small MLP;
- Ray floor: `ray.init()` plus one remote task that imports torch, then exit.

    python benchmarks/startup.py [--repeats 3] [--job jobs/ring.yaml] [--set key=value ...]

Phases come from ganflow's own marks (ganflow.core.trace, on when GANFLOW_TRACE names a file), in
the CLI, the driver and the Ray Train worker. Also times `ganflow --help` and a config error
(`ganflow train bad.yaml`, exit 2). Medians of the repeats; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
import time, torch
net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.Adam(net.parameters())
net(torch.randn(64, 2)).mean().backward()
opt.step()
print(time.time())
"""

RAY_FLOOR = """
import time, ray
ray.init(address="local")  # a new Ray (as ray.init() starts one), never a stale one this machine remembers
@ray.remote
def task():
    import torch
    return torch.__version__
ray.get(task.remote())
print(time.time())
ray.shutdown()
"""

# (label, first mark, last mark): each phase runs from one mark to the next
PHASES = [
    ("interpreter + imports", "launch", "imports"),
    ("config", "imports", "config"),
    ("pre-flight (storage, W&B settings, run files)", "config", "preflight"),
    ("Ray start or join", "preflight", "ray"),
    ("Train controller + worker group", "fit", "worker"),
    ("worker set-up (data, models, DDP, W&B)", "worker", "setup"),
    ("first batch", "setup", "first_batch"),
    ("first step", "first_batch", "first_step"),
    ("to the checkpoint", "first_step", "checkpoint"),
    ("worker wind-down (W&B finish)", "checkpoint", "worker_done"),
    ("Train controller ends", "worker_done", "fit_returned"),
    ("Ray shutdown + exit", "fit_returned", "exit"),
]


def timed(cmd: List[str], env: Dict[str, str] | None = None, expect: int = 0) -> Tuple[float, str]:
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode} (expected {expect}):\n{proc.stderr[-3000:]}")
    return time.time() - start, proc.stdout


def floor(code: str) -> Tuple[float, float]:
    """(seconds to the printed mark, seconds to exit) of `python -c code`."""
    start = time.time()
    total, out = timed([sys.executable, "-c", code])
    return float(out.strip().splitlines()[-1]) - start, total


def ganflow_run(job: str, extra: List[str]) -> Dict[str, float]:
    """Seconds from launch to each mark of a 1-step run (the earliest one of each phase)."""
    with tempfile.TemporaryDirectory(prefix="ganflow-startup-") as tmp:
        trace = Path(tmp) / "trace.jsonl"
        cmd = [sys.executable, "-m", "ganflow.cli", "train", job, "train.steps=1", f"storage.uri={tmp}/runs",
               f"tracking.wandb.dir={tmp}/wandb", *extra]
        start = time.time()
        total, _ = timed(cmd, env={"GANFLOW_TRACE": str(trace), "RAY_ADDRESS": ""})
        marks: Dict[str, float] = {"launch": 0.0, "exit": total}
        for line in trace.read_text().splitlines():
            m = json.loads(line)
            marks.setdefault(m["phase"], m["t"] - start)
            if m["phase"] == "worker" and m.get("process_start"):
                marks["worker_process_start"] = m["process_start"] - start
        return marks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--job", default="jobs/ring.yaml")
    p.add_argument("--set", nargs="*", default=[], help="more dotted overrides for the ganflow run")
    args = p.parse_args()

    plain = [floor(PLAIN) for _ in range(args.repeats)]
    ray_floor = [floor(RAY_FLOOR) for _ in range(args.repeats)]
    runs = [ganflow_run(args.job, args.set) for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("name: bad\ntrain:\n  stepz: 1\n")
        help_s = [timed([sys.executable, "-m", "ganflow.cli", "--help"])[0] for _ in range(args.repeats)]
        bad_s = [timed([sys.executable, "-m", "ganflow.cli", "train", str(bad)], expect=2)[0] for _ in range(args.repeats)]

    med = statistics.median
    print(f"{args.repeats} repeats, medians; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    print(f"plain script (import torch + one step): first step {med(a for a, _ in plain):6.2f} s, exit {med(b for _, b in plain):6.2f} s")
    print(f"Ray floor (ray.init + a task importing torch): task done {med(a for a, _ in ray_floor):6.2f} s, "
          f"exit {med(b for _, b in ray_floor):6.2f} s")
    print(f"ganflow --help {med(help_s):.2f} s; ganflow train bad.yaml (exit 2) {med(bad_s):.2f} s")
    print(f"\nganflow train {args.job} train.steps=1, by phase (s):")
    for label, a, b in PHASES:
        spans = [r[b] - r[a] for r in runs if a in r and b in r]
        if spans:
            print(f"  {label:48s} {med(spans):6.2f}")
    starts = [r["worker_process_start"] - r["fit"] for r in runs if "worker_process_start" in r]
    if starts:
        print(f"  (the worker's process started {med(starts):+.2f} s after fit began)")
    first = med(r["first_step"] for r in runs)
    total = med(r["exit"] for r in runs)
    floor_exit = med(b for _, b in ray_floor)
    print(f"\nfirst step after {first:.2f} s, exit after {total:.2f} s: {total / floor_exit:.2f}x the Ray floor's exit "
          f"({floor_exit:.2f} s), {total / med(b for _, b in plain):.2f}x the plain script's")
    print("exits:", ", ".join(f"{r['exit']:.2f}" for r in runs))


if __name__ == "__main__":
    main()
