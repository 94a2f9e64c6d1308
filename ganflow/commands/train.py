"""`ganflow train JOB.yaml [overrides] [--address ADDR] [--resume RUN] [--dry-run]`: prints the run location
last (with --dry-run: the resolved job, and nothing starts)."""

from __future__ import annotations

from typing import List, Optional

from ganflow.commands.exits import EXIT_FAILURE, die
from ganflow.config import ConfigError, load, redacted
from ganflow.core.trace import mark


def _override(overrides: List[str], key: str) -> Optional[str]:
    values = [item.split("=", 1)[1] for item in overrides if item.startswith(key + "=")]
    return values[-1] if values else None


def main(args, stop=None) -> int:
    """`stop`: the CLI's ganflow.ray.signals.SigtermStop. A bad job file or override exits 2 before
    torch, Ray or W&B is imported (the heavy imports come after the file is read)."""
    job, overrides = args.job, list(args.overrides)
    if job is not None and "=" in job:  # `ganflow train --resume RUN key=value` has no job file
        job, overrides = None, [job] + overrides
    if job is None and args.resume is None:
        return die("train needs a JOB.yaml (or --resume RUN)")
    text = None
    if args.resume is not None and job is None:
        from ganflow.run.run import Run
        from ganflow.store import NotFound, S3Options, StorageError

        # the run's own config.yaml, read from wherever the run lives (endpoint: the override
        # if given, else AWS_ENDPOINT_URL); the overrides then apply on top of it
        try:
            resumed = Run.open(args.resume, S3Options(endpoint_url=_override(overrides, "storage.endpoint_url")))
            resumed.store.check_reachable()
            text = resumed.read_config()
        except NotFound:
            return die(f"--resume: {args.resume} is not a run (no config.yaml there)")
        except StorageError as err:
            return die(f"--resume: {err}")
    try:
        cfg = load(job, overrides, text=text)  # YAML, fields, types, each section's own checks
        from ganflow.job import complete

        cfg = complete(cfg)  # against the registries (models, data, losses, metrics): imports torch
    except ConfigError as err:
        return die(f"config: {err}")
    mark("config")
    if args.dry_run:
        print(redacted(cfg).to_yaml(), end="")
        return 0
    from ganflow.metrics.inception import InceptionWeightsError
    from ganflow.ray import driver
    from ganflow.ray.cluster import RayAddressError
    from ganflow.store import StorageError
    from ganflow.tracking.settings import TrackingError
    from ganflow.run.lease import LeaseHeld

    try:
        run = driver.run(cfg, address=args.address, resume=args.resume, stop=stop, force_takeover=args.force_takeover)
    except (StorageError, TrackingError, InceptionWeightsError, RayAddressError, LeaseHeld) as err:  # raised before any training: storage or W&B unusable
        return die(str(err))
    except ConfigError as err:  # data.path in a bucket, checked before any training
        return die(f"config: {err}")
    except KeyboardInterrupt:
        return die("interrupted", 130)
    except Exception as err:  # Ray's TrainingFailedError and friends: the traceback is above
        return die(f"training failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", EXIT_FAILURE)
    print(run.uri)
    return 0
