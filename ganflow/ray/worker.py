"""The Ray Train worker: `core.fit` on this worker's slice of every global batch, with hooks that
write the run's files, track to W&B, evaluate, and report checkpoints to Ray.

It talks to Ray through a handful of calls only: `get_context`, `get_device`, `prepare_model`,
`get_dataset_shard`, `get_checkpoint` and `report`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ganflow.config import JobConfig
from ganflow.core.fit import Preempted, StepEnd, fit, process_settings
from ganflow.core.gan import global_sum
from ganflow.core.sampling import draw, fixed_latents
from ganflow.core.state import DataMeta, TrainingState, unwrap
from ganflow.core.trace import mark, on_first_call
from ganflow.present.pictures import grid_png, scatter_png
from ganflow.data.images import streamed_dataset
from ganflow.job import batches_for, build_training
from ganflow.metrics.scoring import PeriodicEval
from ganflow.ray.signals import PreemptWatch
from ganflow.run import checkpoint as ckpt
from ganflow.run.layout import RunLayout
from ganflow.run.run import Run
from ganflow.store import store_options
from ganflow.tracking.tracker import Tracker, open_tracker

# Ray Train V2 keeps one unconsumed report per worker and takes it every ~2 s: metrics-only
# reports are spaced by this much (each checkpoint is still reported; metrics.jsonl gets every log step).
RAY_REPORT_INTERVAL_S = 10.0


def _say(line: str) -> None:
    """A line on the worker's stdout, which Ray forwards to the driver once (`print` went twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class TrainProgress:
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


class WorkerHooks:
    """`fit`'s hook in a Ray Train worker: evaluates, writes the run's files and tracks (rank 0),
    checkpoints, reports to Ray at most every RAY_REPORT_INTERVAL_S between checkpoints, and stops
    at a preemption notice. Whether to report or stop is voted on by every rank, so all of them
    make the same Ray calls."""

    def __init__(self, cfg: JobConfig, run: Run, state: TrainingState, meta: DataMeta, rank: int, world: int,
                 tracker: Tracker, evaluation: Optional[PeriodicEval], progress: Optional[TrainProgress],
                 nodes: int = 1, preempt: Optional[PreemptWatch] = None):
        self.cfg, self.run, self.state, self.meta = cfg, run, state, meta
        self.rank, self.world, self.tracker = rank, world, tracker
        self.evaluation, self.progress = evaluation, progress
        self.scaling = {"scaling/workers": world, "scaling/nodes": nodes}
        self.preempt = preempt
        self.last_report = time.monotonic()
        self.device = next(state.G.parameters()).device
        t = cfg.train
        # the latents of every sample grid; rank 0 draws them
        self.fixed = fixed_latents(t.seed, cfg.model.nz, state.G.num_classes, t.num_sample_images, self.device) \
            if rank == 0 else None

    def __call__(self, end: StepEnd) -> None:
        metrics, best = dict(end.metrics), False
        report_due = end.log and self._anyone(time.monotonic() - self.last_report >= RAY_REPORT_INTERVAL_S)
        if end.evaluate and self.evaluation is not None:
            scores, best = self.evaluation(self.state.sampler_model, end.step, self.rank, self.world)
            metrics.update(scores)
        if end.log and self.rank == 0:
            self.log(end.step, metrics)
        if end.sample and self.rank == 0:
            self.sample(end.step, draw(self.state.sampler_model, self.fixed))
        preempted = self.preempt is not None and self._anyone(self.preempt.requested())  # any rank's notice stops all
        if end.checkpoint or preempted:
            self.checkpoint(end.step, metrics or {"step": end.step}, best)
        elif report_due:
            self.report(metrics)
        if preempted and not end.last:
            # every rank waits for rank 0's W&B artifact of this checkpoint: the first rank to raise has
            # Ray tear the group down, rank 0 (and the subprocess W&B was running) with it
            self._anyone(False)
            raise Preempted(f"preempted: stopped at step {end.step} with its checkpoint written")

    def _anyone(self, flag: bool) -> bool:
        """Whether any rank says yes (a collective: every rank asks at the same step)."""
        return global_sum(torch.tensor(float(flag), device=self.device)) > 0

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        metrics.update(self.scaling)
        self.run.append_metrics(metrics)
        self.tracker.log(metrics, step)
        self.progress.update(step, metrics)

    def sample(self, step: int, images: torch.Tensor) -> None:
        centers = torch.tensor(self.meta.centers) if self.meta.centers is not None else None
        png = scatter_png(images, centers) if images.dim() == 2 else grid_png(images)
        self.run.put_sample(step, png)
        self.tracker.log_samples(png, step)

    def report(self, metrics: Dict[str, float]) -> None:
        import ray.train

        ray.train.report(metrics)
        self.last_report = time.monotonic()

    def checkpoint(self, step: int, metrics: Dict[str, float], best: bool) -> None:
        """Rank 0 writes the checkpoint locally, then publishes it into the run (atomically)
        through Ray's upload hook, so Ray's restore and ours see the same checkpoint; W&B gets an
        artifact referencing it there."""
        import ray.train

        key = RunLayout.checkpoint(step)
        self.last_report = time.monotonic()
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=key)
            return
        run, cfg = self.run, self.cfg

        def upload(checkpoint: ray.train.Checkpoint, dir_name: str) -> ray.train.Checkpoint:
            run.publish_checkpoint(Path(checkpoint.path), step)
            path, filesystem = run.store.ray_path(dir_name)  # where Ray's storage sees it
            return ray.train.Checkpoint(path=path, filesystem=filesystem)

        with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as tmp:
            ckpt.write_checkpoint(self.state.state_dict(), cfg.to_dict(), cfg.hash(), Path(tmp), self.meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=key,
                             checkpoint_upload_fn=upload)
            uri = run.store.uri(key)
            self.tracker.log_checkpoint(uri, Path(tmp), step, best)
            if step == cfg.train.steps:
                self.tracker.log_generator(uri, Path(tmp), step)
        mark("checkpoint")


@dataclass(frozen=True)
class LoopConfig:
    """What the driver hands every worker (Ray's `train_loop_config` {"loop": LoopConfig})."""

    job: JobConfig  # the checked, redacted job
    run_uri: str
    wandb: Dict[str, Any]  # tracking.settings.WandbSettings, resolved on the driver
    progress_bar: bool = False  # the driver has a terminal
    streamed: Optional[Dict[str, Any]] = None  # a bucket's images, as the driver listed them: size, classes


def train_loop_per_worker(loop_config: Dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from ganflow.ray.compat import quiet_ray_train_report_logs

    mark("worker")
    quiet_ray_train_report_logs()
    args: LoopConfig = loop_config["loop"]
    cfg = args.job
    run = Run.open(args.run_uri, store_options(cfg.storage))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    dataset, state = build_training(cfg, device, streamed_dataset(cfg.data, **args.streamed) if args.streamed else None)
    _restore(cfg, run, state, rank)
    tracker, kept = _open_tracking(args, run, state.step, rank)
    # every worker scores its share; rank 0 remembers the best (also from before a resume)
    evaluation = PeriodicEval(cfg, kept, store_options(cfg.storage)) if cfg.eval.every else None
    progress = TrainProgress(cfg.train.steps, state.step, args.progress_bar) if rank == 0 else None
    nodes = _count_nodes(world, device)
    if rank == 0:
        before = next((r["scaling/workers"] for r in reversed(kept) if "scaling/workers" in r), None)
        was = f" (was {before})" if before is not None and before != world else ""
        _say(f"[ganflow] step {state.step}: training on {world} worker(s) across {nodes} node(s){was}")
    preempt = PreemptWatch() if cfg.train.checkpoint_on_preempt else None
    started = time.perf_counter()
    handled = False
    try:
        G, D = _prepare_models(cfg, state)
        shard = ray.train.get_dataset_shard("train") if dataset.streamed else None  # this worker's part of the stream
        batches = batches_for(cfg, dataset, rank, world, device, shard)
        hooks = WorkerHooks(cfg, run, state, dataset.meta, rank, world, tracker, evaluation, progress, nodes, preempt)
        mark("setup")
        process_settings(cfg.train)
        fit(cfg, state, on_first_call("first_batch", batches), hooks, rank=rank, world=world, G=G, D=D)
        if progress is not None:
            progress.close()
        if rank == 0:
            tracker.set_summary({"final_step": state.step, "wall_time_s": time.perf_counter() - started,
                                 **(evaluation.summary() if evaluation is not None else {})})
        mark("trained")
    except BaseException as err:
        handled = isinstance(err, Preempted)
        if handled and rank == 0:
            _say(f"[ganflow] {err}; Ray Train restarts from it")
        tracker.finish(failed=True)
        raise
    finally:
        if preempt is not None:
            preempt.close(handled)
    tracker.finish()
    mark("worker_done")


def _restore(cfg: JobConfig, run: Run, state: TrainingState, rank: int) -> None:
    """After a worker failure Ray hands back its latest checkpoint; on `--resume` the run location
    has them. Either way the newest one that passes its checksums wins."""
    import ray.train

    reported = ray.train.get_checkpoint()
    found = run.load_latest_checkpoint(prefer=RunLayout.checkpoint_of(reported.path) if reported else None)
    if found is None:
        return
    resume_from, sd, _ = found
    state.load_state_dict(sd)
    state.set_lr(cfg.optim.g.lr, cfg.optim.d.lr)  # the config's rates win over the restored ones
    if rank == 0:
        _say(f"[ganflow] resuming from {resume_from} (step {state.step})")


def _open_tracking(args: LoopConfig, run: Run, step: int, rank: int) -> Tuple[Tracker, List[Dict[str, Any]]]:
    """(tracker, the run's records up to `step`) on rank 0: records past the restored step (or all,
    with no checkpoint) are redone. Other ranks track nothing."""
    if rank != 0:
        return Tracker(), []
    logged_through = run.truncate_metrics(step)
    kept = run.read_metrics()
    tracker = open_tracker(args.wandb, run.id, args.job.to_dict(), rank, skip_through=logged_through)
    for record in kept:  # W&B commits a row when the next step arrives: a killed attempt's
        tracker.log(record, record["step"])  # last rows may be missing there (logs only those)
    tracker.set_summary({"run_uri": run.uri})
    return tracker, kept


def _prepare_models(cfg: JobConfig, state: TrainingState) -> tuple:
    """(G, D) to step: DDP-wrapped by Ray when world > 1 (SyncBatchNorm first, with
    scaling.sync_batchnorm); `state` keeps the unwrapped models."""
    import ray.train.torch

    G, D = state.G, state.D
    if cfg.scaling.sync_batchnorm:
        G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
        D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(D)
    G = ray.train.torch.prepare_model(G, move_to_device=False)
    D = ray.train.torch.prepare_model(D, move_to_device=False)
    state.G, state.D = unwrap(G), unwrap(D)
    return G, D


def _count_nodes(world: int, device: torch.device) -> int:
    """How many Ray nodes the worker group spans (a collective: every rank calls it), from a tensor on
    this worker's device (all_gather_object would use the process's current CUDA device)."""
    import ray

    if world == 1:
        return 1
    import torch.distributed as dist

    mine = torch.tensor([int(ray.get_runtime_context().get_node_id()[:15], 16)], dtype=torch.int64, device=device)
    ids = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(ids, mine)
    return len({int(t.item()) for t in ids})
