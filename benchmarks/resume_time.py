"""Time to resume the quickstart run from S3 against from local disk, same checkpoint, same process.

    python benchmarks/resume_time.py [--repeat 3] [--endpoint URL --bucket NAME]

Trains the quickstart job (full-size model) for a few steps into a local directory and into a
bucket, then times, for each: loading the newest checkpoint as a resuming worker does
(`Run.load_latest_checkpoint`: list, download, sha256, deserialise), and a whole
`ganflow train --resume` to one step past the checkpoint (config read, storage check, Ray Train
start, restore, one step, final checkpoint). Ray is started once, before any timing. Without
--endpoint it starts moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ganflow.job import load_job
from ganflow.ray import cluster, driver
from ganflow.run.run import Run
from ganflow.store import store_options

import loopback_s3  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"
STEPS = 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    loopback_s3.add_arguments(p)
    args = p.parse_args()
    server = loopback_s3.open_endpoint(args)
    cluster.ensure_ray()
    common = [f"train.steps={STEPS}", f"train.checkpoint_every={STEPS}", "train.sample_every=100000"]
    with tempfile.TemporaryDirectory() as tmp:
        sites = {
            "local": [f"storage.uri={tmp}"],
            "s3": [f"storage.uri=s3://{args.bucket}/bench", f"storage.endpoint_url={args.endpoint}"],
        }
        runs = {name: driver.run(load_job(JOB, common + o)).uri for name, o in sites.items()}
        load_s, resume_s = {k: [] for k in sites}, {k: [] for k in sites}
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.safetensors")) / 2**20
        for i in range(args.repeat):  # interleaved, so drift hits both sides alike
            for name, uri in runs.items():
                cfg = load_job(JOB, common + sites[name])
                run = Run.open(uri, store_options(cfg.storage))
                t = time.perf_counter()
                assert run.load_latest_checkpoint()[1]["step"] >= STEPS
                load_s[name].append(time.perf_counter() - t)
                steps = STEPS + 1 + i  # each repeat resumes from the previous one's final checkpoint
                cfg = load_job(JOB, common + sites[name] + [f"train.steps={steps}", f"train.checkpoint_every={steps}"])
                t = time.perf_counter()
                driver.run(cfg, resume=uri)
                resume_s[name].append(time.perf_counter() - t)
    if server is not None:
        server.stop()
    print(f"quickstart checkpoint: {size_mb:.1f} MiB of safetensors per checkpoint; median of {args.repeat}")
    for label, rows in (("load newest checkpoint", load_s), ("train --resume, 1 step", resume_s)):
        lo, s3 = statistics.median(rows["local"]), statistics.median(rows["s3"])
        print(f"{label:24s} local {lo:7.3f} s   s3 {s3:7.3f} s   s3/local {s3 / lo:.2f}x")


if __name__ == "__main__":
    main()
