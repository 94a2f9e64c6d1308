"""`ganflow sweep SWEEP.yaml`: Ray Tune over ganflow jobs, each trial a distributed training run.

A sweep spec is a base job plus a search space over dotted config keys:

    name: sweep_ring
    job: ring.yaml                      # relative to the spec's folder
    overrides: [train.steps=600]        # on the base job, for every trial
    space:
      optim.g.lr: loguniform(1e-5, 1e-3)
      model.hidden: choice([64, 128])
    search: random                      # random | optuna (TPE); grid() values are crossed
    scheduler: asha                     # fifo | asha
    metric: high_quality                # an eval value (see evaluate.py); default: the job's headline
    mode: max                           # default: the metric's own direction
    num_samples: 4
    max_concurrent_trials: 2

Following Ray's Train-in-Tune pattern (Train V2), every Tune trial is a light driver function that
launches the job's own TorchTrainer (`train.run`), whose reports reach Tune through Ray's
TuneReportCallback: checkpoint steps carry `eval/<value>`, on which schedulers act, with `step`
as time. Every trial is an ordinary ganflow run (`<storage.uri>/<name>/<run_id>`) and W&B run in
a group named after the sweep; the sweep's own files go to `<storage.uri>/sweeps/<name>-<id>/`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from omegaconf import OmegaConf

from ganflow.config import ConfigError, JobConfig, load


class SweepError(ValueError):
    """A bad sweep spec; the message names the field and the fix."""


# name -> (arity check, Tune constructor); arguments are Python literals, never evaluated code
def _tune():
    from ray import tune

    return tune


DISTRIBUTIONS: Dict[str, Callable[..., Any]] = {
    "uniform": lambda lo, hi: _tune().uniform(lo, hi),
    "loguniform": lambda lo, hi: _tune().loguniform(lo, hi),
    "quniform": lambda lo, hi, q: _tune().quniform(lo, hi, q),
    "randint": lambda lo, hi: _tune().randint(lo, hi),
    "choice": lambda values: _tune().choice(values),
    "grid": lambda values: _tune().grid_search(values),
}
SEARCHERS = ("random", "optuna")
SCHEDULERS = ("fifo", "asha")


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str
    args: tuple

    def probes(self) -> List[Any]:
        """Values that bound what this dimension can sample: checked against the job schema."""
        if self.kind in ("choice", "grid"):
            return list(self.args[0])
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return [self.args[0], self.args[1]]

    def to_tune(self):
        return DISTRIBUTIONS[self.kind](*self.args)


@dataclass
class SweepSpec:
    name: str
    job: Path
    overrides: List[str]
    space: List[Dimension]
    search: str = "random"
    scheduler: str = "fifo"
    metric: Optional[str] = None
    mode: Optional[str] = None
    num_samples: int = 4
    max_concurrent_trials: int = 0  # 0: as many as the cluster fits
    grace_steps: Optional[int] = None  # ASHA: steps before a trial can be stopped (default: first eval)
    reduction_factor: int = 2
    base: JobConfig = field(default=None)  # the base job with its overrides, validated

    @property
    def eval_key(self) -> str:
        return f"eval/{self.metric}"


_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.S)


def parse_dimension(key: str, text: Any) -> Dimension:
    where = f"space.{key}"
    if not isinstance(text, str) or not _CALL.match(text):
        raise SweepError(f"{where}: {text!r} is not a distribution; write e.g. loguniform(1e-5, 1e-3), "
                         f"choice([32, 64]) ({', '.join(DISTRIBUTIONS)})")
    kind, body = _CALL.match(text).groups()
    if kind not in DISTRIBUTIONS:
        raise SweepError(f"{where}: unknown distribution {kind!r}; choose from {', '.join(DISTRIBUTIONS)}")
    try:
        args = ast.literal_eval(f"({body},)") if body.strip() else ()
    except (ValueError, SyntaxError):
        raise SweepError(f"{where}: the arguments of {kind}(...) must be numbers or a [list] of values") from None
    if kind in ("choice", "grid"):
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            raise SweepError(f"{where}: {kind} takes one non-empty list, e.g. {kind}([32, 64])")
        args = (list(args[0]),)
    else:
        want = 3 if kind == "quniform" else 2
        if len(args) != want or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise SweepError(f"{where}: {kind} takes {want} numbers, got {body.strip()!r}")
        if not args[0] < args[1]:
            raise SweepError(f"{where}: {kind} needs low < high, got {args[0]} and {args[1]}")
        if kind == "loguniform" and args[0] <= 0:
            raise SweepError(f"{where}: loguniform needs 0 < low < high, got low={args[0]}")
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            raise SweepError(f"{where}: randint takes integers (high excluded), got {body.strip()!r}")
    return Dimension(key, kind, tuple(args))


def override(key: str, value: Any) -> str:
    """A dotted override whose value YAML reads back as the same number, string or list."""
    return f"{key}={json.dumps(value)}"


def load_spec(path: str | Path, extra_overrides: Optional[List[str]] = None) -> SweepSpec:
    """Read and validate a sweep spec: every value the space can take is checked against the job
    schema (through the job's own validation) before anything starts."""
    from ganflow.evaluate import METRICS, ranking

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep: no such file {str(path)!r}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(raw, dict):
        raise SweepError(f"sweep: {path} must hold a mapping (name, job, space, ...)")
    known = {"name", "job", "overrides", "space", "search", "scheduler", "metric", "mode", "num_samples",
             "max_concurrent_trials", "grace_steps", "reduction_factor"}
    for key in raw:
        if key not in known:
            raise SweepError(f"{key}: unknown sweep field; choose from {', '.join(sorted(known))}")
    if "job" not in raw:
        raise SweepError("job: required (the base job's YAML, relative to the sweep file)")
    job = (path.parent / str(raw["job"])).resolve()
    space = raw.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise SweepError("space: required, a mapping of dotted config keys to distributions")
    spec = SweepSpec(
        name=str(raw.get("name") or path.stem), job=job, overrides=[str(o) for o in raw.get("overrides") or []] + list(extra_overrides or []),
        space=[parse_dimension(str(k), v) for k, v in space.items()],
        search=str(raw.get("search", "random")), scheduler=str(raw.get("scheduler", "fifo")),
        metric=raw.get("metric"), mode=raw.get("mode"), num_samples=int(raw.get("num_samples", 4)),
        max_concurrent_trials=int(raw.get("max_concurrent_trials", 0)), grace_steps=raw.get("grace_steps"),
        reduction_factor=int(raw.get("reduction_factor", 2)),
    )
    if spec.search not in SEARCHERS:
        raise SweepError(f"search: {spec.search!r}; choose one of {', '.join(SEARCHERS)}")
    if spec.scheduler not in SCHEDULERS:
        raise SweepError(f"scheduler: {spec.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if spec.num_samples < 1:
        raise SweepError(f"num_samples: must be >= 1, got {spec.num_samples}")
    if spec.search == "optuna" and any(d.kind == "grid" for d in spec.space):
        raise SweepError("space: grid() values cannot be searched by optuna; use choice() or search: random")
    try:
        base = load(job, spec.overrides)
    except ConfigError as err:
        raise SweepError(f"job: {err}") from None
    if not base.eval.every:  # trials are compared, and stopped early, on evaluations at checkpoints
        base = load(job, spec.overrides + [f"eval.every={base.train.checkpoint_every}"])
    for dim in spec.space:
        for value in dim.probes():
            try:
                load(job, base_overrides(spec, base) + [override(dim.key, value)])
            except ConfigError as err:
                message = str(err)
                if message.startswith(dim.key):
                    message = message[len(dim.key):].lstrip(": ")
                raise SweepError(f"space.{dim.key}: {dim.kind}{dim.args if dim.kind not in ('choice', 'grid') else ''} "
                                 f"can give {value!r}, which the job refuses: {message}") from None
    names = base.eval.metrics
    from ganflow.evaluate import default_metrics

    names = names or default_metrics(base)
    rankable = {k: mode for n in names for k, mode in METRICS[n].rankable.items()}
    if spec.metric is None:
        spec.metric = ranking(names, base.eval.best)[0]
    if spec.metric not in rankable:
        raise SweepError(f"metric: {spec.metric!r} is not evaluated by this job's eval.metrics ({', '.join(names)}); "
                         f"choose one of {', '.join(rankable)}")
    spec.mode = spec.mode or rankable[spec.metric]
    if spec.mode not in ("min", "max"):
        raise SweepError(f"mode: {spec.mode!r}; choose min or max")
    spec.base = base
    return spec


def base_overrides(spec: SweepSpec, base: JobConfig) -> List[str]:
    return spec.overrides + [f"eval.every={base.eval.every}"]


# --- running ---------------------------------------------------------------------------------


def _eval_report_callback(eval_key: str):
    """Ray's TuneReportCallback, passing on only the reports that carry the sweep's metric (the
    checkpoint steps' evaluations): schedulers and searchers need it in every result they see."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EvalReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and eval_key in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    return EvalReportCallback()


def run_trial(config: Dict[str, Any]) -> None:
    """One Tune trial: the base job with this trial's values, trained by its own TorchTrainer."""
    from ganflow import train

    sweep = config["sweep"]
    params = config["params"]
    overrides = sweep["overrides"] + [override(k, v) for k, v in params.items()] + [
        f"name={sweep['name']}", f"tracking.wandb.group={sweep['name']}", "tracking.wandb.job_type=trial"]
    cfg = load(sweep["job"], overrides)
    train.run(cfg, callbacks=[_eval_report_callback(sweep["eval_key"])])


def _searcher(spec: SweepSpec):
    if spec.search == "random":
        return None  # Tune's default: random sampling, grid() values crossed
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise SweepError("search: optuna needs the optuna package: pip install 'ganflow[sweep]'") from None
    return OptunaSearch(metric=spec.eval_key, mode=spec.mode)


def _scheduler(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "fifo":
        return FIFOScheduler()
    every = spec.base.eval.every
    grace = spec.grace_steps or every
    return ASHAScheduler(time_attr="step", metric=spec.eval_key, mode=spec.mode, max_t=spec.base.train.steps,
                         grace_period=grace, reduction_factor=spec.reduction_factor)


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
        keys = [d.key for d in spec.space]
        self.columns = ["trial", *keys, "step", spec.metric, "status"]
        print("  ".join(f"{c:>14}" for c in self.columns), file=out, flush=True)

    def row(self, trial, status: str) -> None:
        result = trial.last_result or {}
        values = [trial.trial_id] + [trial.config["params"].get(d.key) for d in self.spec.space]
        values += [result.get("step"), result.get(self.spec.eval_key), status]
        print("  ".join(f"{_fmt(v):>14}" for v in values), file=self.out, flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


@dataclass
class SweepResult:
    location: str
    best_config: Path
    best_checkpoint: Optional[str]
    best_value: Optional[float]
    trials: List[Dict[str, Any]]


def sweep(spec: SweepSpec, address: Optional[str] = None) -> SweepResult:
    """Run the sweep; writes results.jsonl, results.csv, best.yaml and best.json to its location."""
    import ray
    from ray import tune

    from ganflow.objectstore import open_store
    from ganflow.runs import store_options
    from ganflow.train import ensure_ray

    options = store_options(spec.base.storage)
    sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    store = open_store(spec.base.storage.uri, options)
    store.check()
    location = store.uri(f"sweeps/{sweep_id}")
    # Tune stops a trial by ending its driver; Ray Train's cleaner then frees the trial's placement
    # group, which it finds through the State API: the in-process Ray needs its dashboard for that
    started = ensure_ray(address, dashboard=True)
    try:
        storage_path, filesystem = _tune_storage(spec, options)
        sweep_info = {"name": spec.name, "job": str(spec.job), "overrides": base_overrides(spec, spec.base),
                      "eval_key": spec.eval_key}
        table = TrialTable(spec)
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"memory": 1}),  # the trial only drives its TorchTrainer: no CPU of its own
            param_space={"params": {d.key: d.to_tune() for d in spec.space}, "sweep": sweep_info},
            tune_config=tune.TuneConfig(
                num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent_trials or None,
                search_alg=_searcher(spec), scheduler=_scheduler(spec),
                metric=None if spec.scheduler != "fifo" or spec.search != "random" else spec.eval_key,
                mode=None if spec.scheduler != "fifo" or spec.search != "random" else spec.mode,
            ),
            run_config=tune.RunConfig(name=f"sweeps/{sweep_id}/tune", storage_path=storage_path,
                                      storage_filesystem=filesystem, callbacks=[table.callback], verbose=0),
        )
        grid = tuner.fit()
        return _write_results(spec, grid, store, f"sweeps/{sweep_id}", location)
    finally:
        if started:
            ray.shutdown()


def _tune_storage(spec: SweepSpec, options):
    from ganflow.objectstore import is_s3, pyarrow_s3

    uri = spec.base.storage.uri
    if is_s3(uri):
        return uri.removeprefix("s3://").rstrip("/"), pyarrow_s3(options)
    return str(Path(uri).resolve()), None


def _trial_rows(spec: SweepSpec, grid) -> List[Dict[str, Any]]:
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        evals = [] if df is None or spec.eval_key not in df else df[["step", spec.eval_key, "checkpoint_path"]
                                                                     if "checkpoint_path" in df else ["step", spec.eval_key]].dropna(subset=[spec.eval_key]).to_dict("records")
        values = [e[spec.eval_key] for e in evals]
        best = None
        if values:
            pick = min if spec.mode == "min" else max
            best = pick(evals, key=lambda e: e[spec.eval_key])
        metrics = result.metrics or {}
        rows.append({
            "trial": Path(result.path).name if result.path else None,
            **{d.key: (result.config or {}).get("params", {}).get(d.key) for d in spec.space},
            "last_step": metrics.get("step"),
            f"last_{spec.metric}": metrics.get(spec.eval_key),
            f"best_{spec.metric}": best[spec.eval_key] if best else None,
            "best_step": best["step"] if best else None,
            "best_checkpoint": _checkpoint_uri(spec, best.get("checkpoint_path")) if best else None,
            "error": str(result.error).splitlines()[0] if result.error else None,
        })
    return rows


def _checkpoint_uri(spec: SweepSpec, path: Optional[str]) -> Optional[str]:
    """Ray reports a bucket checkpoint as 'bucket/key' (its pyarrow filesystem's path)."""
    from ganflow.objectstore import is_s3

    if not path or not isinstance(path, str):
        return None
    return f"s3://{path}" if is_s3(spec.base.storage.uri) and not is_s3(path) else path


def _write_results(spec: SweepSpec, grid, store, prefix: str, location: str) -> SweepResult:
    rows = _trial_rows(spec, grid)
    scored = [r for r in rows if r[f"best_{spec.metric}"] is not None]
    store.put_bytes(f"{prefix}/results.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    store.put_bytes(f"{prefix}/results.csv", buf.getvalue().encode())
    if not scored:
        raise SweepError(f"no trial reported eval/{spec.metric}; see the trials' errors in {location}/results.jsonl")
    pick = min if spec.mode == "min" else max
    best = pick(scored, key=lambda r: r[f"best_{spec.metric}"])
    winning = [override(d.key, best[d.key]) for d in spec.space]
    best_cfg = load(spec.job, spec.overrides + winning)
    header = (f"# best of sweep {spec.name} ({location}): {spec.metric}={best[f'best_{spec.metric}']:.6g} "
              f"at step {best['best_step']}, trial {best['trial']}\n"
              f"# {', '.join(winning)}\n")
    yaml_text = header + best_cfg.to_yaml()
    store.put_bytes(f"{prefix}/best.yaml", yaml_text.encode())
    store.put_bytes(f"{prefix}/best.json", json.dumps({
        "metric": spec.metric, "mode": spec.mode, "value": best[f"best_{spec.metric}"], "step": best["best_step"],
        "trial": best["trial"], "values": {d.key: best[d.key] for d in spec.space},
        "checkpoint": best["best_checkpoint"]}, indent=2).encode())
    local_best = Path(store.uri(f"{prefix}/best.yaml")) if not location.startswith("s3://") else None
    return SweepResult(location, local_best or Path(f"{location}/best.yaml"), best["best_checkpoint"],
                       best[f"best_{spec.metric}"], rows)
