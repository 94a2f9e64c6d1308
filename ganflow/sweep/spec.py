"""Sweep specs: a base job plus a search space over dotted config keys, read and checked against
the job's own validation before anything starts.

    name: sweep_ring
    job: ring.yaml                      # relative to the spec's folder
    overrides: [train.steps=600]        # on the base job, for every trial
    space:
      optim.g.lr: loguniform(1e-5, 1e-3)
      model.hidden: choice([64, 128])
    search: random                      # random | optuna (TPE); grid() values are crossed
    scheduler: asha                     # fifo | asha | pbt
    metric: high_quality                # an eval value (see ganflow.metrics); default: the job's headline
    mode: max                           # default: the metric's own direction
    num_samples: 4
    max_concurrent_trials: 2
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganflow.config import ConfigError, JobConfig
from ganflow.config.load import NAME
from ganflow.job import load_job
from ganflow.metrics.scoring import default_metrics, rankable_values, ranking
from ganflow.run.layout import SweepLayout
from ganflow.store import NotFound, StorageError, is_s3, open_store


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
class SweepFile:
    """A sweep spec file's fields, typed; the defaults here are the only ones."""

    job: str = ""  # the base job's YAML, relative to the sweep file
    name: Optional[str] = None  # default: the file's stem
    overrides: List[str] = field(default_factory=list)
    space: Dict[str, Any] = field(default_factory=dict)  # dotted key -> distribution, e.g. loguniform(1e-5, 1e-3)
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


@dataclass
class SweepSpec(SweepFile):
    """A checked sweep: the file's fields with the job path absolute, the space parsed, the base job loaded."""

    job: Path = Path()
    name: str = ""
    space: List[Dimension] = field(default_factory=list)
    source: Dict[str, Any] = field(default_factory=dict)  # the spec as read, job path made absolute
    base: JobConfig = field(default=None)  # the base job with its overrides, checked

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
    path = Path(path)
    raw, read = _read(path)
    job = (path.parent / read.job).resolve()
    if not read.space:
        raise SweepError("space: required, a mapping of dotted config keys to distributions")
    spec = SweepSpec(**{**vars(read), "name": read.name or path.stem, "job": job,
                        "overrides": [str(o) for o in read.overrides] + list(extra_overrides or []),
                        "space": [parse_dimension(str(k), v) for k, v in read.space.items()],
                        "source": {**raw, "job": str(job)}})
    if not NAME.match(spec.name):
        raise SweepError(f"name: {spec.name!r}: the sweep's folder; use letters, digits, '.', '_' and '-' (at most 128)")
    _check_search(spec)
    try:
        base = load_job(job, spec.overrides)
    except ConfigError as err:
        raise SweepError(f"job: {err}") from None
    if not base.eval.every:  # trials are compared, and stopped early, on evaluations at checkpoints
        base = load_job(job, spec.overrides + [f"eval.every={base.train.checkpoint_every}"])
    _check_space(spec, base)
    names = base.eval.metrics or default_metrics(base)
    rankable = rankable_values(names)
    metric = spec.metric or ranking(names, base.eval.best)[0]
    if metric not in rankable:
        raise SweepError(f"metric: {metric!r} is not evaluated by this job's eval.metrics ({', '.join(names)}); "
                         f"choose one of {', '.join(rankable)}")
    if spec.scheduler == "pbt" and spec.perturbation_steps and spec.perturbation_steps % base.eval.every:
        raise SweepError(f"perturbation_steps: {spec.perturbation_steps} is not a multiple of eval.every={base.eval.every}; "
                         "trials report (with a checkpoint to take over) only when they evaluate")
    mode = spec.mode or rankable[metric]
    if mode not in ("min", "max"):
        raise SweepError(f"mode: {mode!r}; choose min or max")
    return dataclasses.replace(spec, metric=metric, mode=mode, base=base)


def _read(path: Path) -> Tuple[Dict[str, Any], "SweepFile"]:
    """(the file as a dict, typed): its fields known, `job` given."""
    if not path.is_file():
        raise SweepError(f"sweep: no such file {str(path)!r}")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(raw, dict):
        raise SweepError(f"sweep: {path} must hold a mapping (name, job, space, ...)")
    known = [f.name for f in dataclasses.fields(SweepFile)]
    for key in raw:
        if key not in known:
            raise SweepError(f"{key}: unknown sweep field; choose from {', '.join(sorted(known))}")
    if "job" not in raw:
        raise SweepError("job: required (the base job's YAML, relative to the sweep file)")
    try:
        return raw, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepFile), raw))
    except OmegaConfBaseException as err:
        raise SweepError(f"{getattr(err, 'full_key', None) or 'sweep'}: {str(err).splitlines()[0]}") from None


def _check_search(spec: SweepSpec) -> None:
    """The searcher and scheduler, and what each asks of the rest of the spec."""
    if spec.search not in SEARCHERS:
        raise SweepError(f"search: {spec.search!r}; choose one of {', '.join(SEARCHERS)}")
    if spec.scheduler not in SCHEDULERS:
        raise SweepError(f"scheduler: {spec.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if spec.num_samples < 1:
        raise SweepError(f"num_samples: must be >= 1, got {spec.num_samples}")
    if spec.search == "optuna" and any(d.kind == "grid" for d in spec.space):
        raise SweepError("space: grid() values cannot be searched by optuna; use choice() or search: random")
    if spec.scheduler != "pbt":
        return
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


def _check_space(spec: SweepSpec, base: JobConfig) -> None:
    """Every value each dimension can give, as the job would be loaded with it."""
    for dim in spec.space:
        for value in dim.probes():
            try:
                load_job(spec.job, base_overrides(spec, base) + [override(dim.key, value)])
            except ConfigError as err:
                message = str(err)
                if message.startswith(dim.key):
                    message = message[len(dim.key):].lstrip(": ")
                raise SweepError(f"space.{dim.key}: {dim.kind}{dim.args if dim.kind not in ('choice', 'grid') else ''} "
                                 f"can give {value!r}, which the job refuses: {message}") from None


def base_overrides(spec: SweepSpec, base: JobConfig) -> List[str]:
    return spec.overrides + [f"eval.every={base.eval.every}"]


def pinned_overrides(base: JobConfig) -> List[str]:
    """Tune runs each trial in a directory of its own: local paths the job names relative to
    where `ganflow sweep` was started are made absolute, so runs, data and W&B files are where
    the user looks for them."""
    pinned = [f"tracking.wandb.dir={os.path.abspath(base.tracking.wandb.dir or os.environ.get('WANDB_DIR') or os.getcwd())}"]
    if not is_s3(base.storage.uri):
        pinned.append(f"storage.uri={os.path.abspath(os.path.expanduser(base.storage.uri))}")
    if base.data.path and not is_s3(base.data.path) and not os.path.isabs(base.data.path):
        pinned.append(f"data.path={os.path.abspath(base.data.path)}")
    return pinned


def with_overrides(spec: SweepSpec, extra: List[str]) -> SweepSpec:
    overrides = spec.overrides + extra
    return dataclasses.replace(spec, overrides=overrides, base=load_job(spec.job, overrides + [f"eval.every={spec.base.eval.every}"]))


def load_saved_spec(location: str, extra_overrides: Optional[List[str]] = None) -> SweepSpec:
    """The spec a sweep at `location` (a folder or s3:// prefix) ran with, its sweep.yaml, for `--resume`."""
    import tempfile

    try:
        text = open_store(location).get_bytes(SweepLayout.SPEC).decode()
    except NotFound:
        raise SweepError(f"--resume {location}: no {SweepLayout.SPEC} there; name the sweep folder `ganflow sweep` printed "
                         f"(<storage.uri>/{SweepLayout.ROOT}/<name>-<time>)") from None
    except StorageError as err:
        raise SweepError(f"--resume {location}: {err}") from None
    with tempfile.TemporaryDirectory() as d:  # its job path is absolute: the copy reads the same job
        saved = Path(d, SweepLayout.SPEC)
        saved.write_text(text)
        return load_spec(saved, extra_overrides)
