"""Upload/download throughput of one checkpoint-sized object through ganflow's S3 store against
boto3's own `upload_file`/`download_file` on the same object, same server, same process.

    python benchmarks/storage_throughput.py [--mb 100] [--repeat 3] [--endpoint URL --bucket NAME]

Without --endpoint it starts moto's S3 server on 127.0.0.1 (needs the `test` extra). With one,
credentials come from the usual AWS chain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3

from ganflow.store import S3Options, S3Store

import loopback_s3  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=100)
    loopback_s3.add_arguments(p)
    args = p.parse_args()
    server = loopback_s3.open_endpoint(args)

    store = S3Store(f"s3://{args.bucket}/bench", S3Options(endpoint_url=args.endpoint))
    plain = boto3.client("s3", endpoint_url=args.endpoint)
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "ckpt.bin"
        src.write_bytes(os.urandom(size))
        rows = {"ganflow up": [], "boto3 up": [], "ganflow down": [], "boto3 down": []}
        for _ in range(args.repeat):  # interleaved, so drift hits both sides alike
            rows["ganflow up"].append(timed(lambda: store.put_file("a.bin", src)))
            rows["boto3 up"].append(timed(lambda: plain.upload_file(str(src), args.bucket, "bench/b.bin")))
            rows["ganflow down"].append(timed(lambda: store.get_file("a.bin", Path(tmp) / "a.out")))
            rows["boto3 down"].append(timed(lambda: plain.download_file(args.bucket, "bench/b.bin", str(Path(tmp) / "b.out"))))
        assert (Path(tmp) / "a.out").read_bytes() == src.read_bytes()
    if server is not None:
        server.stop()
    mbps = {k: args.mb / statistics.median(v) for k, v in rows.items()}
    print(f"{args.mb} MiB object, median of {args.repeat}, endpoint {args.endpoint}")
    for way in ("up", "down"):
        g, b = mbps[f"ganflow {way}"], mbps[f"boto3 {way}"]
        print(f"{way:5s} ganflow {g:7.1f} MiB/s   boto3 {b:7.1f} MiB/s   ratio {g / b:.3f}")


if __name__ == "__main__":
    main()
