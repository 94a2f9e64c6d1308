"""`ganflow data prepare SOURCE --out LOCATION --resolution R`: a prepared data set (see
ganflow/data/prepared.py), written by one process or by Ray workers shard by shard; resumable.
Prints the location last."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

from ganflow.commands.common import die
from ganflow.config import ConfigError
from ganflow.present.progress import Progress
from ganflow.data.prepare import PrepareError, Settings, ShardWriter, begin, finish, list_source, plan
from ganflow.data.prepared import MANIFEST
from ganflow.metrics.inception import InceptionWeightsError
from ganflow.ray.cluster import RayAddressError, driver_address
from ganflow.store import S3Options, StorageError, open_store

log = logging.getLogger("ganflow.data")


def _reference_count(text: str) -> Optional[int]:
    """--reference: all -> 0 (every image), none -> None, N -> N."""
    if text == "all":
        return 0
    if text == "none":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise PrepareError(f"--reference: all, none or a count > 0, got {text!r}")


def _workers(requested: Optional[int], shards: int) -> int:
    if requested is not None:
        if requested < 1:
            raise PrepareError(f"--workers: must be >= 1, got {requested}")
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if shards <= 2 else max(1, min(cpus, shards))


def _on_actors(workers: int, address: Optional[str]):
    """`mapper(cls, init_args, method, items)` on `workers` Ray actors, results in order."""
    from ganflow.ray.pool import map_on_actors

    def mapper(cls, init, method, items):
        return map_on_actors(cls, init, method, items, workers, "data prepare", address=address)

    return mapper


def prepare(args, options: S3Options) -> dict:
    settings = Settings(args.resolution, args.channels, args.shard_size)
    settings.check()
    if args.workers != 1:  # a Jobs API address: one line before anything is written
        driver_address(args.address, "data prepare")
    reference = _reference_count(args.reference)
    if reference is not None:  # the weights are found before anything is written
        from ganflow.metrics.reference import check_prepared_reference

        check_prepared_reference(args.extractor, args.inception_weights, options)
    source = list_source(args.source, args.labels, options)
    settings.source = source.describe()
    out = open_store(args.out, options)
    out.check()
    done = begin(out, settings)
    todo = [p for p in plan(len(source.names), settings.shard_size) if p[0] not in done]
    workers = _workers(args.workers, len(todo))
    started = time.perf_counter()
    images = sum(stop - first for _, first, stop in todo)
    if done:
        log.info("resuming %s: %d shard(s) already written, %d to go", out.uri(), len(done), len(todo))
    init = (source, args.out, settings, options)
    if workers == 1 or not todo:
        writer = ShardWriter(*init)
        written = (writer.write(*p) for p in todo)
    else:
        written = _on_actors(workers, args.address)(ShardWriter, init, "write", todo)
    with Progress(images, "data prepare", "images") as progress:
        for entry in written:
            done[entry["index"]] = entry
            for name, why in entry["skipped"]:
                log.warning("skipped %s: %s", name, why)
            progress.update(entry["stop"] - entry["first"])
    if args.on_error == "fail":  # shards done before (a resumed prepare) count too; no manifest is written
        bad = [s for e in sorted(done.values(), key=lambda e: e["index"]) for s in e["skipped"]]
        if bad:
            raise PrepareError(f"SOURCE: {bad[0][0]}: {bad[0][1]} ({len(bad)} such file(s)); remove them, or pass "
                               "--on-error skip to leave them out (listed in the manifest)")
    seconds = time.perf_counter() - started
    manifest = finish(out, source, settings, list(done.values()))
    if reference is not None:
        from ganflow.metrics.reference import reference_for_prepared

        mapper = _on_actors(workers, args.address) if workers > 1 else None
        manifest = reference_for_prepared(args.out, options, args.extractor, args.inception_weights, reference,
                                          parts=4 * workers if workers > 1 else 1, mapper=mapper)
    return {"manifest": manifest, "seconds": seconds, "images": images, "workers": workers}


def main(args) -> int:
    # the endpoint from AWS_ENDPOINT_URL, resolved here so that the Ray actors use it too; credentials
    # from the AWS chain wherever the work runs
    options = S3Options(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    try:
        out = open_store(args.out, options)
        if out.exists(MANIFEST):
            manifest = json.loads(out.get_bytes(MANIFEST))
            log.info("%s is already a prepared set of %d images", out.uri(), manifest["count"])
            print(out.uri())
            return 0
        result = prepare(args, options)
    except (PrepareError, ConfigError, InceptionWeightsError, RayAddressError) as err:
        return die(str(err))
    except StorageError as err:
        return die(f"--out: {err}")
    m = result["manifest"]
    rate = result["images"] / max(result["seconds"], 1e-9)
    log.info("%d images (%d classes, %d skipped) in %.1f s: %.0f images/s with %d worker(s)", m["count"],
             len(m["classes"]), len(m["skipped"]), result["seconds"], rate, result["workers"])
    print(out.uri())
    return 0
