"""`ganflow serve` under load on loopback (issue 31): a bounded number of concurrent HTTP clients
for a bounded time, each asking /sample?n=N&format=npz with its own seeds; p50/p99 latency and
images/s at 1 and 2 replicas, against calling the same generator directly in one process (the
same requests, one after another: what a script without a server gets). Run with nothing else on
the machine:

    python benchmarks/serve_load.py RUN [--clients 8] [--seconds 15] [--n 16]

RUN: a run or checkpoint (default: a quickstart DCGAN trained here for 200 steps without Ray).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def quickstart_checkpoint(where: Path) -> str:
    from tests.conftest import trained_checkpoint

    return str(trained_checkpoint(where, "quickstart.yaml", steps=200))


def percentile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def load(call, clients: int, seconds: float) -> dict:
    """`clients` threads calling `call(seed)` back to back for `seconds`: latencies and count."""
    stop = time.perf_counter() + seconds
    latencies = []

    def client(k: int) -> None:
        seed = k * 1_000_000
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call(seed)
            latencies.append(time.perf_counter() - t)
            seed += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return {"requests": len(latencies), "seconds": time.perf_counter() - started,
            "p50_ms": 1e3 * statistics.median(latencies), "p99_ms": 1e3 * percentile(latencies, 0.99)}


def served(run: str, replicas: int, clients: int, seconds: float, n: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        with open(out, "w") as o:
            proc = subprocess.Popen([sys.executable, "-m", "ganflow.cli", "-q", "serve", run, "--port", str(port),
                                     "--replicas", str(replicas), "--cpus-per-replica", "0.5"], stdout=o,
                                    stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            while url not in out.read_text().splitlines():
                if proc.poll() is not None:
                    raise SystemExit("ganflow serve did not start")
                time.sleep(0.5)

            def call(seed: int) -> None:
                with urllib.request.urlopen(f"{url}/sample?n={n}&seed={seed}&format=npz", timeout=60) as r:
                    r.read()

            call(0)  # warm
            return load(call, clients, seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def direct(run: str, clients: int, seconds: float, n: int) -> dict:
    import ganflow

    g = ganflow.load_generator(run)
    g.sample(n, seed=0)
    return load(lambda seed: g.sample(n, seed=seed), 1, seconds)  # one process, one caller at a time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or quickstart_checkpoint(Path(tmp))
        rows = {"direct (one process)": direct(run, args.clients, args.seconds, args.n)}
        for replicas in (1, 2):
            rows[f"serve, {replicas} replica(s)"] = served(run, replicas, args.clients, args.seconds, args.n)
    base = rows["direct (one process)"]["requests"] / rows["direct (one process)"]["seconds"] * args.n
    print(f"n={args.n} per request, {args.clients} concurrent clients (serve), {args.seconds:g} s each, {os.cpu_count()} CPUs")
    for name, r in rows.items():
        rate = r["requests"] / r["seconds"] * args.n
        print(f"{name:24s} {rate:8.0f} images/s ({rate / base:.2f}x direct)  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms")


if __name__ == "__main__":
    main()
