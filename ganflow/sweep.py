"""`ganflow sweep SWEEP.yaml`: Ray Tune over ganflow jobs, each trial a distributed training run.

A sweep spec is a base job plus a search space over dotted config keys:

    name: sweep_ring
    job: ring.yaml                      # relative to the spec's folder
    overrides: [train.steps=600]        # on the base job, for every trial
    space:
      optim.g.lr: loguniform(1e-5, 1e-3)
      model.hidden: choice([64, 128])
    search: random                      # random | optuna (TPE); grid() values are crossed
    scheduler: asha                     # fifo | asha | pbt
    metric: high_quality                # an eval value (see evaluate.py); default: the job's headline
    mode: max                           # default: the metric's own direction
    num_samples: 4
    max_concurrent_trials: 2

Following Ray's Train-in-Tune pattern (Train V2), every Tune trial is a light driver function that
launches the job's own TorchTrainer (`train.run`). Its evaluations reach Tune through a Ray Train
callback and the trial function, which reports each with a Tune checkpoint that names the
ganflow checkpoint beside it (a few bytes; the weights stay where the run keeps them). Schedulers
act on `eval/<value>` with `step` as time; PBT clones a trial by handing another trial that
pointer, and the clone starts a new ganflow run from a copy of that checkpoint, its learning
rates perturbed; `Tuner.restore` (`--resume`) hands a trial its own pointer, and it resumes its
own run. Every trial is an ordinary ganflow run (`<storage.uri>/<name>/<run_id>`) and W&B run in
a group named after the sweep; the sweep's own files go to `<storage.uri>/sweeps/<name>-<id>/`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
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
SCHEDULERS = ("fifo", "asha", "pbt")
# what PBT may perturb when one trial takes over another's checkpoint: values the restored state
# does not fix (the config's learning rates win over the restored optimiser's, see train.py)
PERTURBABLE = ("optim.g.lr", "optim.d.lr")
POINTER = "ganflow_checkpoint.json"  # the Tune checkpoint's one file


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
    perturbation_steps: Optional[int] = None  # PBT: steps between exploits (default: eval.every)
    quantile_fraction: float = 0.25  # PBT: the bottom share takes over the top share's checkpoints
    seed: int = 0  # the searcher's: the same spec samples the same trials
    source: Dict[str, Any] = field(default_factory=dict)  # the spec as read, job path made absolute
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
        args = _bare_words(body) if kind in ("choice", "grid") else None
        if args is None:
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


def _bare_words(body: str) -> Optional[tuple]:
    """`[hinge, nonsaturating, wgan-gp]`: a list as YAML reads it (words need no quotes)."""
    import yaml

    try:
        value = yaml.safe_load(body)
    except yaml.YAMLError:
        return None
    return (value,) if isinstance(value, list) else None


def override(key: str, value: Any) -> str:
    """A dotted override whose value YAML reads back as the same number, string or list."""
    return f"{key}={json.dumps(value)}"


def load_spec(path: str | Path, extra_overrides: Optional[List[str]] = None) -> SweepSpec:
    """Read and validate a sweep spec: every value the space can take is checked against the job
    schema (through the job's own validation) before anything starts."""
    from ganflow.evaluate import default_metrics, rankable_values, ranking

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep: no such file {str(path)!r}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(raw, dict):
        raise SweepError(f"sweep: {path} must hold a mapping (name, job, space, ...)")
    known = {"name", "job", "overrides", "space", "search", "scheduler", "metric", "mode", "num_samples",
             "max_concurrent_trials", "grace_steps", "reduction_factor", "perturbation_steps", "quantile_fraction", "seed"}
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
        reduction_factor=int(raw.get("reduction_factor", 2)), perturbation_steps=raw.get("perturbation_steps"),
        quantile_fraction=float(raw.get("quantile_fraction", 0.25)), seed=int(raw.get("seed", 0)),
        source={**raw, "job": str(job)},
    )
    if spec.search not in SEARCHERS:
        raise SweepError(f"search: {spec.search!r}; choose one of {', '.join(SEARCHERS)}")
    if spec.scheduler not in SCHEDULERS:
        raise SweepError(f"scheduler: {spec.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if spec.num_samples < 1:
        raise SweepError(f"num_samples: must be >= 1, got {spec.num_samples}")
    if spec.search == "optuna" and any(d.kind == "grid" for d in spec.space):
        raise SweepError("space: grid() values cannot be searched by optuna; use choice() or search: random")
    if spec.scheduler == "pbt":
        if spec.search != "random":
            raise SweepError("search: PBT samples its population itself; use search: random with scheduler: pbt")
        if not any(d.key in PERTURBABLE for d in spec.space):
            raise SweepError(f"space: PBT perturbs learning rates while trials train; put {' or '.join(PERTURBABLE)} in the space "
                             "(other keys are sampled once, and follow the checkpoint a trial takes over)")
        if spec.max_concurrent_trials and spec.max_concurrent_trials < spec.num_samples:
            raise SweepError(f"max_concurrent_trials: PBT's population trains together; set it to num_samples "
                             f"({spec.num_samples}) or leave it out, with scaling small enough for all to fit")
        if not 0 < spec.quantile_fraction <= 0.5:
            raise SweepError(f"quantile_fraction: must be in (0, 0.5], got {spec.quantile_fraction}")
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
    names = base.eval.metrics or default_metrics(base)
    rankable = rankable_values(names)
    if spec.metric is None:
        spec.metric = ranking(names, base.eval.best)[0]
    if spec.metric not in rankable:
        raise SweepError(f"metric: {spec.metric!r} is not evaluated by this job's eval.metrics ({', '.join(names)}); "
                         f"choose one of {', '.join(rankable)}")
    if spec.scheduler == "pbt" and spec.perturbation_steps and spec.perturbation_steps % base.eval.every:
        raise SweepError(f"perturbation_steps: {spec.perturbation_steps} is not a multiple of eval.every={base.eval.every}; "
                         "trials report (with a checkpoint to take over) only when they evaluate")
    spec.mode = spec.mode or rankable[spec.metric]
    if spec.mode not in ("min", "max"):
        raise SweepError(f"mode: {spec.mode!r}; choose min or max")
    spec.base = base
    return spec


def base_overrides(spec: SweepSpec, base: JobConfig) -> List[str]:
    return spec.overrides + [f"eval.every={base.eval.every}"]


# --- running ---------------------------------------------------------------------------------


def _eval_relay(reports, eval_key: str):
    """A Ray Train callback (it runs in the TorchTrainer's controller) passing each report that
    carries the sweep's metric, with its checkpoint's path, to the trial function through a Ray
    queue: the trial function reports it to Tune, with a checkpoint, which only it can do."""
    from ray.train.v2.api.callback import UserCallback

    class EvalRelay(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and eval_key in metrics[0]:
                reports.put({**metrics[0], "checkpoint_path": checkpoint.path if checkpoint else None})

    return EvalRelay()


def trial_overrides(sweep: Dict[str, Any], params: Dict[str, Any]) -> List[str]:
    return sweep["overrides"] + [override(k, v) for k, v in params.items()] + [
        f"name={sweep['name']}", f"tracking.wandb.group={sweep['name']}", "tracking.wandb.job_type=trial"]


def run_of(checkpoint_uri: str) -> str:
    """The run a checkpoint URI belongs to (`<run>/checkpoints/step_N`)."""
    return checkpoint_uri.rstrip("/").rsplit("/", 2)[0]


def _read_pointer(checkpoint) -> Optional[Dict[str, Any]]:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        found = Path(d) / POINTER
        return json.loads(found.read_text()) if found.is_file() else None


def run_trial(config: Dict[str, Any], sweep: Dict[str, Any]) -> None:
    """One Tune trial: the base job with this trial's values, trained by its own TorchTrainer.
    Started with its own earlier checkpoint (a restored sweep, a paused trial) it resumes its own
    run; with another trial's (a PBT exploit) it starts a new run from a copy of that checkpoint."""
    import tempfile
    import threading

    from ray import tune
    from ray.util.queue import Queue

    from ganflow import train
    from ganflow.runs import checkpoint_key_of, store_options

    cfg = load(sweep["job"], trial_overrides(sweep, config["params"]))
    trial_id = tune.get_context().get_trial_id()
    resume = fork = None
    earlier = _read_pointer(tune.get_checkpoint())
    if earlier and earlier["trial"] == trial_id:
        resume = run_of(earlier["checkpoint"])
    elif earlier:
        fork = earlier["checkpoint"]
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    ended: Dict[str, Any] = {}

    def fit() -> None:
        try:
            ended["run"] = train.run(cfg, resume=resume, fork_from=fork,
                                     callbacks=[_eval_relay(reports, sweep["eval_key"])])
        except BaseException as err:  # raised again in the trial's own thread, where Tune sees it
            ended["error"] = err
        finally:
            reports.put(None)

    threading.Thread(target=fit, name="ganflow-trial", daemon=True).start()
    log = TrialLog(sweep["location"], trial_id, store_options(cfg.storage))
    used = {key: OmegaConf.select(OmegaConf.create(cfg.to_dict()), key) for key in config["params"]}
    logged = False
    while (result := reports.get()) is not None:
        uri = checkpoint_uri(cfg.storage.uri, result.pop("checkpoint_path"))
        metrics = {**result, "checkpoint": uri or "", "run": run_of(uri) if uri else "", "forked_from": fork or ""}
        log.append({"step": result["step"], sweep["eval_key"]: result[sweep["eval_key"]], "checkpoint": uri,
                    "run": metrics["run"], "forked_from": fork, "params": used})
        logged = True
        if not uri:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory(prefix="ganflow-pointer-") as d:
            pointer = {"trial": trial_id, "checkpoint": uri, "step": result["step"],
                       "value": result[sweep["eval_key"]]}
            Path(d, POINTER).write_text(json.dumps(pointer))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))  # copied to Tune's storage here
    if "error" in ended:
        raise ended["error"]
    if fork and not logged:  # PBT copied a finished trial's last checkpoint: nothing left to train, and
        # no report to Tune either (PBT would exploit again at the same step), but the copy is this trial's run
        run = ended["run"].uri
        log.append({"step": earlier["step"], sweep["eval_key"]: earlier.get("value"),
                    "checkpoint": f"{run}/{checkpoint_key_of(fork)}", "run": run, "forked_from": fork, "params": used})


class TrialLog:
    """`<sweep>/trials/<trial_id>.jsonl`: a line per evaluation a trial reported (step, metric,
    checkpoint, run, the values in force). Tune's own per-trial history is rewritten when a trial
    restarts from a checkpoint (PBT, restore); this one only grows, so results come from it."""

    def __init__(self, location: str, trial_id: str, options=None):
        from ganflow.objectstore import S3Options, open_store

        self.store = open_store(location, options or S3Options())
        self.key = f"trials/{trial_id}.jsonl"

    def append(self, record: Dict[str, Any]) -> None:
        self.store.put_bytes(self.key, (self.read_text() + json.dumps(record) + "\n").encode())

    def read_text(self) -> str:
        from ganflow.objectstore import NotFound

        try:
            return self.store.get_bytes(self.key).decode()
        except NotFound:
            return ""

    def records(self) -> List[Dict[str, Any]]:
        """In the order they were first made: a run resumed from its checkpoint evaluates steps
        again (the later evaluation counts), while PBT's runs of one trial evaluate the same steps
        each on its own (all count: a run whose steps a later fork repeated was still trained)."""
        by_run_step: Dict[Any, Dict[str, Any]] = {}
        for line in self.read_text().splitlines():
            record = json.loads(line)
            by_run_step[record.get("run"), record["step"]] = record
        return list(by_run_step.values())


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

    def row(self, trial, status: str) -> None:
        if not self.header_printed:
            print("  ".join(f"{c:>14}" for c in self.columns), file=self.out, flush=True)
            self.header_printed = True
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


SPEC_FILE = "sweep.yaml"  # the spec as run (absolute paths), what `--resume` reads back


def pinned_overrides(base: JobConfig) -> List[str]:
    """Tune runs each trial in a directory of its own: local paths the job names relative to
    where `ganflow sweep` was started are made absolute, so runs, data and W&B files are where
    the user looks for them."""
    from ganflow.objectstore import is_s3

    pinned = [f"tracking.wandb.dir={os.path.abspath(base.tracking.wandb.dir or os.environ.get('WANDB_DIR') or os.getcwd())}"]
    if not is_s3(base.storage.uri):
        pinned.append(f"storage.uri={os.path.abspath(os.path.expanduser(base.storage.uri))}")
    if base.data.path and not is_s3(base.data.path) and not os.path.isabs(base.data.path):
        pinned.append(f"data.path={os.path.abspath(base.data.path)}")
    return pinned


def sweep(spec: SweepSpec, address: Optional[str] = None, resume: Optional[str] = None) -> SweepResult:
    """Run the sweep (or finish the one at `resume`, a sweep location: its finished trials are
    kept, the others go on from their last checkpoints); writes results.jsonl, results.csv,
    best.yaml and best.json to its location."""
    import ray
    from ray import tune

    from ganflow.evaluate import check_extractor
    from ganflow.objectstore import open_store
    from ganflow.runs import store_options
    from ganflow.train import ensure_ray, stop_on_sigterm

    options = store_options(spec.base.storage)
    store = open_store(spec.base.storage.uri, options)
    store.check()
    check_extractor(spec.base, options)  # every trial evaluates: missing Inception weights fail here, once
    sweep_key = resume_key(spec, resume) if resume else f"sweeps/{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    location = store.uri(sweep_key)
    if not resume:
        spec = with_overrides(spec, pinned_overrides(spec.base))
        store.put_bytes(f"{sweep_key}/{SPEC_FILE}", OmegaConf.to_yaml({**spec.source, "overrides": spec.overrides}).encode())
    print(f"[ganflow] sweep {location} (if cut short: ganflow sweep --resume {location})", file=sys.stderr, flush=True)
    # Tune stops a trial by ending its driver; Ray Train's cleaner then frees the trial's placement
    # group, which it finds through the State API (see train.ensure_ray)
    started = ensure_ray(address)
    stop_on_sigterm()
    try:
        storage_path, filesystem = _tune_storage(spec, options)
        # the sweep's constants go with the trainable, not in the searched space (nor trial names)
        sweep_info = {"name": spec.name, "job": str(spec.job), "overrides": base_overrides(spec, spec.base),
                      "eval_key": spec.eval_key, "location": location}
        trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=sweep_info),
                                        {"memory": 1})  # the trial only drives its TorchTrainer: no CPU of its own
        if resume:
            experiment = f"{storage_path}/{sweep_key}/tune"
            if not tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
                raise SweepError(f"--resume {location}: no Tune experiment state in {location}/tune")
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
                run_config=tune.RunConfig(name=f"{sweep_key}/tune", storage_path=storage_path,
                                          storage_filesystem=filesystem, callbacks=[TrialTable(spec).callback], verbose=0),
            )
        grid = tuner.fit()
        return _write_results(spec, grid, store, sweep_key, location, options)
    finally:
        if started:
            ray.shutdown()


def with_overrides(spec: SweepSpec, extra: List[str]) -> SweepSpec:
    from dataclasses import replace

    overrides = spec.overrides + extra
    return replace(spec, overrides=overrides, base=load(spec.job, overrides + [f"eval.every={spec.base.eval.every}"]))


def resume_key(spec: SweepSpec, location: str) -> str:
    """The sweep's key in its storage (`sweeps/<name>-<time>`), from the location `--resume` names."""
    name = location.rstrip("/").rsplit("/", 1)[-1]
    return f"sweeps/{name}"


def load_saved_spec(location: str, extra_overrides: Optional[List[str]] = None) -> SweepSpec:
    """The spec a sweep at `location` ran with (its sweep.yaml), for `--resume`."""
    import tempfile

    from ganflow.objectstore import NotFound, StorageError, is_s3, open_store

    if is_s3(location):
        try:
            text = open_store(location.rstrip("/")).get_bytes(SPEC_FILE).decode()
        except (NotFound, StorageError) as err:
            raise SweepError(f"--resume {location}: no {SPEC_FILE} there ({err}); name the folder `ganflow sweep` printed") from None
        with tempfile.TemporaryDirectory() as d:
            saved = Path(d, SPEC_FILE)
            saved.write_text(text)
            return load_spec(saved, extra_overrides)
    saved = Path(location, SPEC_FILE)
    if not saved.is_file():
        raise SweepError(f"--resume {location}: no {SPEC_FILE} there; name the sweep folder `ganflow sweep` printed "
                         "(<storage.uri>/sweeps/<name>-<time>)")
    return load_spec(saved, extra_overrides)


def _tune_storage(spec: SweepSpec, options):
    from ganflow.objectstore import is_s3, pyarrow_s3

    uri = spec.base.storage.uri
    if is_s3(uri):
        return uri.removeprefix("s3://").rstrip("/"), pyarrow_s3(options)
    return str(Path(uri).resolve()), None


TRIAL_ID = re.compile(r"^run_trial_([0-9a-f]+(?:_\d{5})?)(?:_|$)")  # random search: 6a1f0_00003; optuna: 1c4a3c33


def _trial_rows(spec: SweepSpec, grid, location: str, options) -> List[Dict[str, Any]]:
    """A row per trial from its TrialLog (the values shown are those in force at its best
    evaluation: under PBT they change as the trial goes), with Tune's error if it failed."""
    rows = []
    for result in grid:
        name = Path(result.path).name if result.path else ""
        # the directory's id first: after a PBT exploit, Tune's last metrics for a trial can be its donor's
        found = TRIAL_ID.match(name).group(1) if TRIAL_ID.match(name) else (result.metrics or {}).get("trial_id")
        records = TrialLog(location, found, options).records() if found else []
        scored = [r for r in records if r.get(spec.eval_key) is not None]
        pick = min if spec.mode == "min" else max
        best = pick(scored, key=lambda r: r[spec.eval_key]) if scored else None
        last = records[-1] if records else {}
        params = (best or last).get("params") or (result.config or {}).get("params", {})
        lineage = {r["run"]: r.get("forked_from") for r in records if r.get("run")}
        rows.append({
            "trial": name or None,
            **{d.key: params.get(d.key) for d in spec.space},
            "last_step": last.get("step"),
            f"last_{spec.metric}": last.get(spec.eval_key),
            f"best_{spec.metric}": best[spec.eval_key] if best else None,
            "best_step": best["step"] if best else None,
            "best_checkpoint": best["checkpoint"] if best else None,
            # the ganflow runs the trial trained, in order, and the checkpoint each began from (PBT)
            "runs": list(lineage), "forked_from": list(lineage.values()),
            "error": str(result.error).splitlines()[0] if result.error else None,
        })
    return rows


def checkpoint_uri(storage_uri: str, path: Any) -> Optional[str]:
    """Ray reports a bucket checkpoint as 'bucket/key' (its pyarrow filesystem's path)."""
    from ganflow.objectstore import is_s3

    if not path or not isinstance(path, str):
        return None
    return f"s3://{path}" if is_s3(storage_uri) and not is_s3(path) else path


def _write_results(spec: SweepSpec, grid, store, prefix: str, location: str, options) -> SweepResult:
    rows = _trial_rows(spec, grid, location, options)
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
