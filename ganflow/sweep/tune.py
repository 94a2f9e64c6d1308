"""`ganflow sweep SWEEP.yaml`: Ray Tune over ganflow jobs, each trial a distributed training run.

Every trial is an ordinary ganflow run (`<storage.uri>/<name>/<run_id>`) and W&B run in a group
named after the sweep; the sweep's own files go to `<storage.uri>/sweeps/<name>-<id>/`. Schedulers
act on `eval/<value>` with `step` as time (see ganflow.sweep.trial for how trials report).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Dict, Optional

from omegaconf import OmegaConf

from ganflow.present.progress import Progress
from ganflow.ray.cluster import preflight, ray_session
from ganflow.ray.signals import SigtermStop
from ganflow.run.layout import SweepLayout
from ganflow.store import open_store
from ganflow.sweep.results import SweepResult, write_results
from ganflow.sweep.spec import PERTURBABLE, SweepError, SweepSpec, base_overrides, pinned_overrides, with_overrides
from ganflow.sweep.trial import run_trial

log = logging.getLogger("ganflow.sweep")


def _searcher(spec: SweepSpec):
    if spec.search == "random":  # random sampling, grid() values crossed
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials)  # Tune applies max_concurrent_trials to Searchers only
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise SweepError("search: optuna needs the optuna package: pip install 'ganflow[sweep]'") from None
    return OptunaSearch(metric=spec.eval_key, mode=spec.mode, seed=spec.seed)


def _asha(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="step", metric=spec.eval_key, mode=spec.mode, max_t=spec.base.train.steps,
                         grace_period=spec.grace_steps or spec.base.eval.every, reduction_factor=spec.reduction_factor)


def _pbt(spec: SweepSpec):
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = {d.key: d.to_tune() for d in spec.space if d.key in PERTURBABLE}
    return PopulationBasedTraining(
        time_attr="step", metric=spec.eval_key, mode=spec.mode,
        perturbation_interval=spec.perturbation_steps or spec.base.eval.every,
        hyperparam_mutations={"params": mutations}, quantile_fraction=spec.quantile_fraction)


SCHEDULER_BUILDERS: Dict[str, Callable[[SweepSpec], Any]] = {"fifo": lambda spec: None, "asha": _asha, "pbt": _pbt}


class TrialTable:
    """A Tune callback printing a row per finished trial: id, its values, last step, metric."""

    def __init__(self, spec: SweepSpec, out=sys.stderr):
        from ray.tune import Callback

        table = self

        class _Callback(Callback):
            def on_trial_complete(self, iteration, trials, trial, **info):
                step = (trial.last_result or {}).get("step") or 0
                table.row(trial, "done" if step >= spec.base.train.steps else "stopped")

            def on_trial_error(self, iteration, trials, trial, **info):
                table.row(trial, "error")

        self.callback = _Callback()
        self.spec, self.out = spec, out
        self.columns = ["trial", *[d.key for d in spec.space], "step", spec.metric, "status"]
        self.header_printed = False
        self.progress = None  # made at the first finished trial (Tune pickles its callbacks at the start)

    def row(self, trial, status: str) -> None:
        if not self.header_printed:
            print("  ".join(f"{c:>14}" for c in self.columns), file=self.out, flush=True)
            self.header_printed = True
        result = trial.last_result or {}
        values = [trial.trial_id] + [trial.config["params"].get(d.key) for d in self.spec.space]
        values += [result.get("step"), result.get(self.spec.eval_key), status]
        print("  ".join(f"{_fmt(v):>14}" for v in values), file=self.out, flush=True)
        if self.progress is None:
            self.progress = Progress(self.spec.num_samples, "sweep", "trials finished", stream=self.out, every=1)
        self.progress.update(1)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def sweep(spec: SweepSpec, address: Optional[str] = None, resume: Optional[str] = None,
          stop: Optional[SigtermStop] = None) -> SweepResult:
    """Run the sweep (or finish the one at `resume`, a sweep location: its finished trials are
    kept, the others go on from their last checkpoints); writes results.jsonl, results.csv,
    best.yaml and best.json to its location."""
    from ray import tune

    options = preflight(spec.base, address, "sweep")  # every trial evaluates: missing FID weights fail here, once
    store = open_store(spec.base.storage.uri, options)
    store.check()
    sweep_key = SweepLayout.key_of(resume) if resume else SweepLayout.new_key(spec.name)
    location = store.uri(sweep_key)
    if not resume:
        spec = with_overrides(spec, pinned_overrides(spec.base))
        store.put_bytes(f"{sweep_key}/{SweepLayout.SPEC}", OmegaConf.to_yaml({**spec.source, "overrides": spec.overrides}).encode())
    log.info("sweep %s (if cut short: ganflow sweep --resume %s)", location, location)
    # Tune stops a trial by ending its driver; Ray Train's cleaner then frees the trial's placement
    # group, which it finds through the State API (see ganflow.ray.cluster.ensure_ray)
    with ray_session(address, "sweep", stop):
        storage_path, filesystem = store.ray_path()
        # the sweep's constants go with the trainable, not in the searched space (nor trial names)
        sweep_info = {"name": spec.name, "job": str(spec.job), "overrides": base_overrides(spec, spec.base),
                      "eval_key": spec.eval_key, "location": location}
        trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=sweep_info),
                                        {"memory": 1})  # the trial only drives its TorchTrainer: no CPU of its own
        if resume:
            experiment = f"{storage_path}/{sweep_key}/{SweepLayout.TUNE}"
            if not tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
                raise SweepError(f"--resume {location}: no Tune experiment state in {location}/{SweepLayout.TUNE}")
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=filesystem)
        else:
            plain = spec.scheduler == "fifo" and spec.search == "random"  # else the scheduler/optuna holds them
            tuner = tune.Tuner(
                trainable,
                param_space={"params": {d.key: d.to_tune() for d in spec.space}},
                tune_config=tune.TuneConfig(
                    num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent_trials or None,
                    search_alg=_searcher(spec), scheduler=SCHEDULER_BUILDERS[spec.scheduler](spec),
                    metric=spec.eval_key if plain else None, mode=spec.mode if plain else None,
                ),
                run_config=tune.RunConfig(name=f"{sweep_key}/{SweepLayout.TUNE}", storage_path=storage_path,
                                          storage_filesystem=filesystem, callbacks=[TrialTable(spec).callback], verbose=0),
            )
        grid = tuner.fit()
        return write_results(spec, grid, store, sweep_key, location, options)
