"""The Ray Train side: the per-worker loop (DDP, sharded batches, reports, checkpoints, samples)
and the driver that launches it with `TorchTrainer`.

The worker talks to Ray through a handful of calls only: `get_context`, `get_device`,
`prepare_model`, `get_checkpoint` and `report`. The GAN maths lives in `gan.py`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from ganflow import checkpoint as ckpt
from ganflow import tracking
from ganflow.config import ConfigError, JobConfig, from_dict
from ganflow.data import BatchSampler, build_dataset
from ganflow.data.images import StreamedBatches, ray_dataset, streamed_dataset
from ganflow.evaluate import PeriodicEval, check_extractor, eval_due
from ganflow.gan import GANStep, TrainingState, unwrap
from ganflow.models import build_models
from ganflow.objectstore import StorageError, is_s3
from ganflow.runs import Run, checkpoint_key, checkpoint_key_of, store_options
from ganflow.visual import grid_png, scatter_png

log = logging.getLogger("ganflow.train")


def build_state(cfg: JobConfig, device: torch.device, dataset=None):
    """Data set (unless given), models and training state for one worker (also used by the benchmarks)."""
    torch.manual_seed(cfg.train.seed)  # identical init on every rank; DDP broadcasts rank 0's anyway
    if dataset is None:
        dataset = build_dataset(cfg.data, cfg.train.seed, store_options(cfg.storage))
    G, D = build_models(cfg.model, dataset.shape, dataset.num_classes)
    return dataset, TrainingState.create(cfg, G, D, device)


# Ray Train V2 keeps one unconsumed report per worker and its controller takes it every ~2 s
# (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S), so a report made sooner blocks the training loop (on a
# GPU, 1 report per 50 steps cut throughput 4x). Metrics-only reports are spaced by this much;
# every checkpoint is still reported, and metrics.jsonl gets every log step.
RAY_REPORT_INTERVAL_S = 10.0


def _sample_png(state: TrainingState, stepper: GANStep, dataset, fixed) -> bytes:
    G = state.sampler_model
    was_training = G.training
    G.eval()
    with torch.no_grad():
        out = G(*fixed)
    G.train(was_training)
    if out.dim() == 2:
        return scatter_png(out, dataset.centers)
    return grid_png(out)


def _mean_across_workers(values: Dict[str, float], device: torch.device) -> Dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def _say(line: str) -> None:
    """A line on the worker's stdout, which Ray forwards to the driver once. (Ray Train V2 turns
    `print` into a root-logger record, which reached the driver twice: stdout and stderr.)"""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Progress:
    """Rank 0's progress: Ray's tqdm bar when the driver has a terminal, else a log line per report."""

    def __init__(self, total: int, initial: int, bar: bool):
        self.total, self.last, self.bar = total, initial, None
        self.started, self.start_step = time.perf_counter(), initial
        if bar:
            from ray.experimental.tqdm_ray import tqdm

            self.bar = tqdm(total=total, desc="train")
            self.bar.update(initial)

    def update(self, step: int, m: Dict[str, float]) -> None:
        done = step - self.start_step
        eta = (time.perf_counter() - self.started) / max(done, 1) * (self.total - step)
        text = f"D {m['loss/d']:.3f} G {m['loss/g']:.3f} | {m['throughput/imgs_per_s']:.0f} img/s"
        if self.bar is not None:
            self.bar.set_description(f"train | {text}")
            self.bar.update(step - self.last)
        else:
            _say(f"[ganflow] step {step}/{self.total} | {text} | ETA {eta:.0f}s")
        self.last = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _quiet_ray_train_logs() -> None:
    """Ray Train V2 logs every report at INFO, metrics dict included; our progress line says it better."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(loop_config: Dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    _quiet_ray_train_logs()
    cfg = from_dict(loop_config["job"])
    run = Run.open(loop_config["run_uri"], store_options(cfg.storage))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    streamed = loop_config.get("streamed")  # a bucket's images: described once, by the driver
    dataset, state = build_state(cfg, device, streamed_dataset(cfg.data, **streamed) if streamed else None)
    # After a worker failure Ray hands back its latest checkpoint; on `--resume` the run location
    # has them. Either way the newest one that passes its checksums wins.
    reported = ray.train.get_checkpoint()
    found = run.load_latest_checkpoint(prefer=checkpoint_key_of(reported.path) if reported else None)
    if found is not None:
        resume_from, sd, _ = found
        state.load_state_dict(sd)
        state.set_lr(cfg.optim.g.lr, cfg.optim.d.lr)  # the config's rates win over the restored ones
        if rank == 0:
            _say(f"[ganflow] resuming from {resume_from} (step {state.step})")
    tracker: tracking.Tracker = tracking.Tracker()
    evaluation = None
    kept: List[Dict[str, Any]] = []  # rank 0: the records up to the restored step
    if rank == 0:  # records past the restored step (or all, with no checkpoint) are redone
        logged_through = run.truncate_metrics(state.step)
        kept = run.read_metrics()
        tracker = tracking.open_tracker(loop_config["wandb"], run.id, cfg.to_dict(), rank, skip_through=logged_through)
        for record in kept:  # W&B commits a row when the next step arrives: a killed attempt's
            tracker.log(record, record["step"])  # last rows may be missing there (logs only those)
        tracker.set_summary({"run_uri": run.uri})
    if cfg.eval.every:  # every worker scores its share; rank 0 remembers the best (also from before a resume)
        evaluation = PeriodicEval(cfg, kept, store_options(cfg.storage))
    try:
        _train(cfg, run, state, dataset, device, rank, world, tracker, evaluation, loop_config.get("progress_bar", False))
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish()


def _train(cfg: JobConfig, run: Run, state: TrainingState, dataset, device: torch.device, rank: int, world: int,
           tracker: tracking.Tracker, evaluation: Optional[PeriodicEval], progress_bar: bool) -> None:
    import ray.train
    import ray.train.torch

    started = time.perf_counter()

    G, D = state.G, state.D
    if cfg.scaling.sync_batchnorm:
        G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
        D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(D)
    G = ray.train.torch.prepare_model(G, move_to_device=False)  # DDP when world > 1
    D = ray.train.torch.prepare_model(D, move_to_device=False)
    state.G, state.D = unwrap(G), unwrap(D)

    stepper = GANStep(cfg, device, dataset.num_classes, cfg.model.nz)
    if dataset.streamed:  # this worker's shard of the Ray Data stream
        batches = StreamedBatches(ray.train.get_dataset_shard("train"), cfg.train.batch_size // world, cfg.train.seed, device)
    else:
        sampler = BatchSampler(len(dataset), cfg.train.batch_size, cfg.train.seed, rank, world, device)
        x = dataset.x.to(device)
        y = dataset.y.to(device) if dataset.y is not None and dataset.num_classes else None

        def batches(index: int):
            idx = sampler.indices(index)
            return x[idx], (y[idx] if y is not None else None)

    meta = data_meta(dataset)
    t = cfg.train
    fixed = stepper.fixed_latents(cfg.train.num_sample_images) if rank == 0 else None
    progress = Progress(t.steps, state.step, progress_bar) if rank == 0 else None
    images_per_step = t.batch_size * stepper.n_critic
    window_start, window_steps = time.perf_counter(), 0
    last_ray_report = time.monotonic()

    while state.step < t.steps:
        next_step = state.step + 1
        eval_now, best = eval_due(cfg, next_step), False
        log_now = next_step % t.log_every == 0 or next_step == t.steps or eval_now
        out = stepper.step(state, G, D, batches, rank, world, want_norms=log_now)
        window_steps += 1
        step = state.step

        metrics: Dict[str, float] = {}
        if log_now:
            values = {k: v.item() for k, v in out.items()}
            # every rank must make the same reports (V2 orders them across ranks): decide together
            values["_ray_report_due"] = float(time.monotonic() - last_ray_report >= RAY_REPORT_INTERVAL_S)
            metrics = _mean_across_workers(values, device)
            ray_report_due = metrics.pop("_ray_report_due") > 0
            elapsed = time.perf_counter() - window_start
            metrics["throughput/imgs_per_s"] = images_per_step * window_steps / elapsed
            metrics["lr/g"] = state.opt_g.param_groups[0]["lr"]
            metrics["lr/d"] = state.opt_d.param_groups[0]["lr"]
            metrics["step"] = step
            if evaluation is not None and eval_now:
                scores, best = evaluation(state.sampler_model, step, rank, world)
                metrics.update(scores)
            if rank == 0:
                run.append_metrics(metrics)
                tracker.log(metrics, step)
                progress.update(step, metrics)
            window_start, window_steps = time.perf_counter(), 0

        if rank == 0 and (step % t.sample_every == 0 or step == t.steps):
            png = _sample_png(state, stepper, dataset, fixed)
            run.put_sample(step, png)
            tracker.log_samples(png, step)

        if step % t.checkpoint_every == 0 or step == t.steps:
            _report_checkpoint(cfg, state, metrics or {"step": step}, run, rank, meta, tracker, best)
            last_ray_report = time.monotonic()
        elif log_now and ray_report_due:
            ray.train.report(metrics)
            last_ray_report = time.monotonic()

    if progress is not None:
        progress.close()
    if rank == 0:
        tracker.set_summary({"final_step": state.step, "wall_time_s": time.perf_counter() - started,
                             **(evaluation.summary() if evaluation is not None else {})})


def data_meta(dataset) -> Dict[str, Any]:
    """What `ganflow sample` needs to rebuild the generator without the data set."""
    return {
        "sample_shape": list(dataset.shape),
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes or []),  # class names, in label order
        "centers": dataset.centers.tolist() if dataset.centers is not None else None,
    }


def _report_checkpoint(cfg: JobConfig, state: TrainingState, metrics: Dict[str, float], run: Run, rank: int,
                       meta: Dict[str, Any], tracker: tracking.Tracker, best: bool) -> None:
    """Rank 0 writes the checkpoint locally, then publishes it into the run's `checkpoints/`
    (atomically: a rename, or manifest-last in a bucket) through Ray's upload hook, so Ray's
    restore and ours see the same checkpoint; W&B gets an artifact referencing it there."""
    import ray.train

    name = ckpt.step_dir_name(state.step)
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=f"checkpoints/{name}")
        return

    def upload(checkpoint: ray.train.Checkpoint, dir_name: str) -> ray.train.Checkpoint:
        run.publish_checkpoint(Path(checkpoint.path), state.step)
        return run.ray_checkpoint(dir_name)

    with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as tmp:
        ckpt.write_checkpoint(state.state_dict(), cfg.to_dict(), cfg.hash(), Path(tmp), meta)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoints/{name}",
            checkpoint_upload_fn=upload,
        )
        uri = run.store.uri(checkpoint_key(state.step))
        tracker.log_checkpoint(uri, Path(tmp), state.step, best)
        if state.step == cfg.train.steps:
            tracker.log_generator(uri, Path(tmp), state.step)


def ensure_ray(address: Optional[str] = None) -> bool:
    """Connect to `address` (or RAY_ADDRESS), else start an in-process local Ray. True if we started it.

    The in-process Ray has its dashboard, on 8265 or, if that is taken, a free port: Ray Train's
    placement-group cleaner asks the State API whether the trainer's controller lives, and the
    State API finds it through the dashboard address this cluster records. Without a dashboard
    that record still says 127.0.0.1:8265, and with another Ray's dashboard there the answer is
    "no such actor": the cleaner then removes the placement group of a run that is training."""
    import ray

    from ganflow.rayhooks import PIN_STATE_API

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        start_local_ray()
        return True
    # A driver joining a cluster pins its workers too: otherwise the State API asks the cluster the
    # machine's `ray_current_cluster` file names (the last `ray start` there, which may be another
    # or gone: a killed head leaves the file behind), and the cleaner's call to a gone one waited
    # out a 10 s timeout at the end of every run. A submitted job's workers get the hook from the
    # submission (ganflow submit), and Ray refuses the same runtime_env key twice.
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    ray.init(address=address, logging_level=logging.WARNING, **({} if in_job else {"runtime_env": dict(PIN_STATE_API)}))
    return True


def start_local_ray(**options: Any) -> None:
    """A new Ray of our own ("local": never the last `ray start` cluster Ray would find), with its
    dashboard and its workers pinned to it; `options` go to `ray.init` (num_cpus, ...)."""
    import ray

    from ganflow.rayhooks import PIN_STATE_API

    ray.init(**{"address": "local", "include_dashboard": True, "dashboard_port": _free_dashboard_port(),
                "logging_level": logging.WARNING, "configure_logging": True, "runtime_env": dict(PIN_STATE_API), **options})


def _free_dashboard_port(preferred: int = 8265) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    return preferred


def map_on_actors(cls, init_args: tuple, method: str, items: list, workers: int) -> list:
    """`cls(*init_args).method(*item)` for each item, on `workers` 1-CPU Ray actors (an actor
    loads its checkpoint once, not once per item); results in the order of `items`."""
    import ray
    from ray.util import ActorPool

    ensure_ray()
    actor_cls = ray.remote(num_cpus=1)(cls)
    pool = ActorPool([actor_cls.remote(*init_args) for _ in range(workers)])
    return list(pool.map(lambda actor, item: getattr(actor, method).remote(*item), items))


STOP_ON_SIGTERM = False  # set by the CLI: a SIGTERM (Ray's `jobs stop`, a scheduler) stops the run cleanly
_ACTIVE_RUN: Optional[Run] = None  # the run `run` is training, marked stopped first on SIGTERM


def _interrupt(signum, frame):
    # Ray's `jobs stop` kills after a few seconds of grace; mark the run before unwinding
    if _ACTIVE_RUN is not None:
        try:
            _ACTIVE_RUN.write_status("stopped")
        except StorageError as err:
            log.warning("could not mark %s stopped: %s", _ACTIVE_RUN.uri, err)
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, so the run is marked stopped and Tune
    saves a sweep's state. Installed again after `ray.init`, whose core worker sets its own."""
    import signal
    import threading

    if STOP_ON_SIGTERM and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def check_fits_local_ray(scaling, address: Optional[str] = None) -> None:
    """Ray Train waits forever (retrying every 60 s) for workers a fixed cluster cannot place; on
    the in-process Ray, or one already running here, say so up front instead. A remote cluster may
    autoscale, so it is left to Ray."""
    import ray

    if ray.is_initialized():
        have = ray.cluster_resources()
    elif address or os.environ.get("RAY_ADDRESS"):
        return
    else:
        have = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    per_worker = {"CPU": 1.0, **({"GPU": 1.0} if scaling.use_gpu else {}), **scaling.resources_per_worker}
    for res, amount in per_worker.items():
        need = amount * scaling.num_workers
        if need > have.get(res, 0.0) + 1e-9:
            key = "scaling.use_gpu" if res == "GPU" and res not in scaling.resources_per_worker \
                else f"scaling.resources_per_worker.{res}"
            raise ConfigError(f"{key}: {scaling.num_workers} workers x {amount:g} {res} need {need:g}, "
                              f"the local Ray has {have.get(res, 0.0):g}; lower {key} or scaling.num_workers")


def run(cfg: JobConfig, address: Optional[str] = None, resume: Optional[str] = None, callbacks=None,
        fork_from: Optional[str] = None) -> Run:
    """Train `cfg` (a fresh run, or the run at `resume` continued to cfg.train.steps); returns the run.
    `fork_from` (a checkpoint URI of another run): the fresh run starts from a copy of it, at its
    step, with cfg's learning rates (a PBT exploit).

    Storage is checked before Ray starts: the resolved config is the first write, so a wrong
    endpoint, a missing bucket or missing credentials fail here (StorageError) with nothing written;
    so does a data.path in a bucket that holds no images (ConfigError)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = from_dict(tracking.redact(cfg.to_dict()))  # no credential travels on: config.yaml, checkpoints, W&B
    check_fits_local_ray(cfg.scaling, address)
    options = store_options(cfg.storage)
    if cfg.eval.every:  # weights missing offline: say where to put them before anything is written
        check_extractor(cfg, options)
    # images in a bucket are streamed by Ray Data and split across the workers by Ray Train;
    # listed first, so a wrong data.path fails (ConfigError) before anything is written
    streamed = build_dataset(cfg.data, cfg.train.seed, options) if is_s3(cfg.data.path or "") else None
    run = Run.open(resume, options) if resume else Run.create(cfg.storage.uri, cfg.name, options)
    wandb_settings = tracking.prepare(cfg)  # before the first write: a broken W&B leaves nothing behind
    run.store.check()
    if wandb_settings.mode == "offline":
        print(f"[ganflow] W&B offline: {wandb_settings.dir}/wandb/offline-run-*-{run.id} "
              "(upload with `wandb sync`)", file=sys.stderr)
    run.write_config(cfg.to_yaml())
    run.write_status("running")
    if fork_from and not resume:
        copied = run.adopt_checkpoint(fork_from)
        print(f"[ganflow] {run.uri} starts from a copy of {fork_from}: {copied}", file=sys.stderr)
    storage_path, name, filesystem = run.ray_storage()
    started = ensure_ray(address)
    stop_on_sigterm()
    datasets = {"train": ray_dataset(cfg.data, options, streamed.classes or [])} if streamed else None
    s = cfg.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": cfg.to_dict(), "run_uri": run.uri, "progress_bar": sys.stderr.isatty(),
                           "wandb": wandb_settings.to_dict(),
                           "streamed": {"size": len(streamed), "classes": streamed.classes} if streamed else None},
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=dict(s.resources_per_worker)
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=callbacks,  # a sweep's trial passes Tune's report callback
        ),
    )
    fit_started = time.perf_counter()
    global _ACTIVE_RUN
    _ACTIVE_RUN = run
    try:
        trainer.fit()
    except BaseException as err:
        try:
            run.write_status("stopped" if isinstance(err, KeyboardInterrupt) else "failed")
        except StorageError as err:  # storage may be why it failed; keep the original error
            log.warning("could not mark %s failed: %s", run.uri, err)
        raise
    finally:
        _ACTIVE_RUN = None
        if started:
            import ray

            ray.shutdown()
    run.write_status("completed", step=cfg.train.steps, fit_seconds=round(time.perf_counter() - fit_started, 1))
    return run
