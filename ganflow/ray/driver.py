"""The Ray Train driver: checks what can be checked before Ray starts, writes the run's first
files, and launches the worker loop (ganflow.ray.worker) with `TorchTrainer`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import time
from typing import Optional

from ganflow.config import ConfigError, JobConfig, load, redacted
from ganflow.core.trace import mark
from ganflow import data
from ganflow.ray.cluster import preflight, ray_session
from ganflow.ray.stream import ray_dataset
from ganflow.ray.signals import SigtermStop
from ganflow.ray.worker import LoopConfig, train_loop_per_worker
from ganflow.run.lease import Lease, LeaseLost
from ganflow.run.run import Run
from ganflow.store import StorageError, is_s3
from ganflow.tracking.settings import prepare as prepare_tracking

log = logging.getLogger("ganflow.train")


def run(cfg: JobConfig, address: Optional[str] = None, resume: Optional[str] = None, callbacks=None,
        fork_from: Optional[str] = None, stop: Optional[SigtermStop] = None, force_takeover: bool = False) -> Run:
    """Train `cfg` (a fresh run, or the run at `resume` continued to cfg.train.steps); returns the run.
    `fork_from` (a checkpoint URI of another run): the fresh run starts from a copy of it, at its
    step, with cfg's learning rates (a PBT exploit). `cfg` is a checked job (ganflow.job.load_job).
    `stop` (the CLI's): a SIGTERM marks the run stopped and raises KeyboardInterrupt. The run's
    lease is held throughout (LeaseHeld when another writer holds it; `force_takeover` takes it).

    Storage is checked before Ray starts: the resolved config is the first write, so a wrong
    endpoint, a missing bucket or missing credentials fail here (StorageError) with nothing written;
    so does a data.path in a bucket that holds no images (ConfigError)."""
    cfg = redacted(cfg)  # no credential travels on: config.yaml, checkpoints, W&B
    options = preflight(cfg, address, "train")
    # images in a bucket are listed here (streamed by Ray Data, split across the workers by Ray Train)
    opened = data.build_dataset(cfg.data, cfg.train.seed, options) if is_s3(cfg.data.path or "") else None
    streamed = opened if opened is not None and opened.streamed else None
    run, wandb_settings, lease = _open_run(cfg, resume, fork_from, options, force_takeover)
    mark("preflight")
    with lease:
        try:
            with stop.watching(run) if stop is not None else contextlib.nullcontext(), ray_session(address, "train", stop):
                mark("ray")
                trainer = _trainer(cfg, run, LoopConfig(
                    job=cfg, run_uri=run.uri, wandb=wandb_settings.to_dict(), progress_bar=sys.stderr.isatty(),
                    streamed={"size": len(streamed), "classes": streamed.classes} if streamed else None),
                    {"train": ray_dataset(cfg.data, options, streamed.classes or [])} if streamed else None, callbacks)
                fit_started = time.perf_counter()
                mark("fit")
                trainer.fit()
                mark("fit_returned")
        except BaseException as err:
            if lease.lost:  # the run is another writer's now: leave its status alone
                raise LeaseLost(f"run {run.uri}: another writer took it over (--force-takeover); this one stopped") from None
            # a SIGTERM inside ray.init meets Ray's own handler, sys.exit(15): a stop all the same
            stopped = isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code == signal.SIGTERM)
            try:
                run.write_status("stopped" if stopped else "failed")
            except StorageError as err:  # storage may be why it failed; keep the original error
                log.warning("could not mark %s failed: %s", run.uri, err)
            if stopped and not isinstance(err, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
        run.write_status("completed", step=cfg.train.steps, fit_seconds=round(time.perf_counter() - fit_started, 1))
    return run


def _open_run(cfg: JobConfig, resume: Optional[str], fork_from: Optional[str], options, force_takeover: bool = False):
    """(run, W&B settings, lease): the run opened or created, W&B checked and the run's lease taken
    before the first write (a broken W&B or a run still being written leaves nothing changed), what
    an interrupted writer left removed, the config written, a PBT fork's checkpoint adopted."""
    run = Run.open(resume, options) if resume else Run.create(cfg.storage.uri, cfg.name, options)
    if resume:
        _check_resumable(cfg, run)
    wandb_settings = prepare_tracking(cfg)
    run.store.check()
    lease = Lease.take(run.store, run.uri, force=force_takeover)
    for name in run.remove_leftovers():
        log.warning("removed %s, left half-written by an earlier writer", name)
    if wandb_settings.mode == "offline":
        log.info("W&B offline: %s/wandb/offline-run-*-%s (upload with `wandb sync`)", wandb_settings.dir, run.id)
    run.write_config(cfg.to_yaml())
    run.write_status("running")
    if fork_from and not resume:
        copied = run.adopt_checkpoint(fork_from)
        log.info("%s starts from a copy of %s: %s", run.uri, fork_from, copied)
    return run, wandb_settings, lease


SHAPE_FIELDS = ("resolution", "channels", "classes")  # the data section's part of the networks' shapes


def _check_resumable(cfg: JobConfig, run: Run) -> None:
    """A resume continues the run's networks: overrides that would change their shapes are refused
    before anything of the run is rewritten (they used to rewrite config.yaml, then fail in the
    workers, and every later plain resume failed the same way)."""
    try:
        was = load(text=run.read_config())
    except (ConfigError, StorageError):
        return  # an unreadable old config: the checkpoint's own checks decide
    before = {**dataclasses.asdict(was.model), **{f"data.{k}": getattr(was.data, k) for k in SHAPE_FIELDS}}
    after = {**dataclasses.asdict(cfg.model), **{f"data.{k}": getattr(cfg.data, k) for k in SHAPE_FIELDS}}
    changed = [k for k in before if before[k] != after[k]]
    if changed:
        key = changed[0] if changed[0].startswith("data.") else f"model.{changed[0]}"
        raise ConfigError(f"{key}: the run was trained with {before[changed[0]]!r}, not {after[changed[0]]!r}; a resume "
                          "keeps its networks (start a new run from it with train.init_from=RUN)")


def _trainer(cfg: JobConfig, run: Run, loop: LoopConfig, datasets, callbacks):
    """Ray Train's TorchTrainer for the job: fixed or elastic workers, Ray's run folder in the run's
    location, retries from train.max_failures, a sweep trial's Tune callback."""
    import ray.train
    from ray.train.torch import TorchTrainer

    storage_path, name, filesystem = run.ray_storage()
    s = cfg.scaling
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": loop},
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=(s.min_workers, s.max_workers) if s.elastic else s.num_workers, use_gpu=s.use_gpu,
            resources_per_worker=dict(s.resources_per_worker), placement_strategy=s.placement_strategy,
            elastic_resize_monitor_interval_s=s.resize_interval_s,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=callbacks,  # a sweep's trial passes Tune's report callback
        ),
    )
