"""`ganflow synth` throughput (images/s, PNG files written) with the generator in this process and
with 1 and 2 Ray workers, against a plain-PyTorch reference in the same process: a loop of
G(z) in batches and PIL PNG encoding into a folder, nothing else.

    python benchmarks/synth_throughput.py RUN [--num 4000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganflow.run.generator import load_generator  # noqa: E402
from ganflow.commands.synth import ShardWriter, class_folder_names, plan, synthesize  # noqa: E402
from ganflow.present.pictures import image_png  # noqa: E402


def reference(run: str, num: int, out: Path) -> float:
    G = load_generator(run).G
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, num, 500):
            n = min(500, num - i)
            y = torch.randint(max(G.num_classes, 1), (n,)) if G.num_classes else None
            x = G(torch.randn(n, G.nz), y).clamp(-1, 1)
            for j in range(n):
                (out / f"{i + j:07d}.png").write_bytes(image_png(x[j]))
    return num / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--num", type=int, default=4000)
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ganflow-synth-bench-"))
    (scratch / "ref").mkdir()
    ref = reference(args.run, args.num, scratch / "ref")
    print(f"plain PyTorch loop, this process: {ref:.0f} images/s", flush=True)
    from ganflow.ray.cluster import ensure_ray

    started = time.perf_counter()
    ensure_ray()  # once, up front: the rates below include starting the actors, not Ray itself
    print(f"(starting the in-process Ray: {time.perf_counter() - started:.1f} s)", flush=True)
    for label, workers in (("ganflow synth, this process", 1), ("ganflow synth, 2 Ray workers", 2),
                           ("ganflow synth, 1 Ray worker", -1)):
        out = scratch / f"w{workers}"
        if workers == -1:  # one Ray actor: the Ray path's own cost, against the in-process one
            from ganflow.ray.pool import map_on_actors

            loaded = load_generator(args.run)
            shards = plan(args.num, None, loaded.G.num_classes)
            folders = class_folder_names(loaded.meta, loaded.G.num_classes)
            started = time.perf_counter()
            list(map_on_actors(ShardWriter, (args.run, str(out), "png", 0, None, folders), "write",
                               [(s,) for s in shards], 1, "synth"))
            rate = args.num / (time.perf_counter() - started)
        else:
            manifest = synthesize(args.run, str(out), num=args.num, workers=workers)
            rate = manifest["total"] / manifest["seconds"]
        print(f"{label}: {rate:.0f} images/s (x{rate / ref:.2f} of the reference)", flush=True)


if __name__ == "__main__":
    main()
