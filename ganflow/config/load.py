"""Loading a job: schema <- YAML file <- dotted overrides (OmegaConf), and the checks each section
can make on its own. Checks that involve the registries (is this data set labelled, does this
model take images) live in `ganflow.job`, which also resolves the defaults that depend on them.

Every error is a `ConfigError` whose message starts with the dotted key, so the CLI can print one
line and exit 2 before any Ray work starts. Nothing here changes the config it checks.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganflow.config.schema import (PLACEMENT_STRATEGIES, DataConfig, JobConfig, LossConfig, ModelConfig, OptimizerConfig,
                                   ScalingConfig, StorageConfig, TrainConfig, WandbConfig)
from ganflow.config.secrets import (CREDENTIALS_HINT, REDACTED, from_environment, redact, secret_key_message,
                                    secret_keys_in)


class ConfigError(ValueError):
    """A bad job config; the message names the dotted key and what would fix it."""


def fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def one_of(key: str, value: str, choices) -> None:
    if value not in choices:
        fail(key, f"unknown value {value!r}; choose one of {', '.join(choices)}")


def positive(key: str, value: float) -> None:
    if not (value > 0) or (isinstance(value, float) and not math.isfinite(value)):
        fail(key, f"must be > 0, got {value}")


NORMS = ("batch", "none")
WANDB_MODES = ("online", "offline", "disabled")
ON_ERROR = ("fail", "disable")
WANDB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
RETRY_MODES = ("standard", "adaptive")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # experiment and sweep names: a folder or key part anywhere


def check_fields(cfg: JobConfig) -> JobConfig:
    """Range and same-section checks, which need nothing but the config itself."""
    if not NAME.match(cfg.name or ""):
        fail("name", f"{cfg.name!r}: a run's experiment folder; use letters, digits, '.', '_' and '-' (at most 128, "
                     "not starting with '.', '_' or '-')")
    _check_values(cfg)
    _check_data(cfg.data)
    _check_model(cfg.model)
    _check_loss(cfg.loss)
    for net in ("g", "d"):
        _check_optimizer(f"optim.{net}", getattr(cfg.optim, net))
    _check_train(cfg.train)
    _check_scaling(cfg.scaling, cfg.train)
    _check_storage(cfg.storage)
    _check_tracking(cfg.tracking.wandb)
    _check_eval(cfg)
    return cfg


def _leaves(node: Any, key: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, node


def _check_values(cfg: JobConfig) -> None:
    """What holds for every field: numbers are finite (a NaN gamma would silently turn its penalty
    off), an s3 URI is spelled s3:// (`s3:/b/x` would become a local folder named `s3:`), and the
    seed is one torch and numpy both take."""
    for key, value in _leaves(cfg.to_dict()):
        if isinstance(value, float) and not math.isfinite(value):
            fail(key, f"must be a finite number, got {value}")
        if isinstance(value, str) and value[:3].lower() == "s3:" and not value.startswith("s3://"):
            fail(key, f"{value!r} is not an S3 URI; write s3://bucket/prefix")
        if isinstance(value, str) and not key.startswith(FREE_TEXT) and max(map(len, value.split("/"))) > 255:
            fail(key, "a name or path part longer than 255 characters (no file system holds one)")
    if not 0 <= cfg.train.seed < 2**63:
        fail("train.seed", f"must be in [0, 2**63), got {cfg.train.seed}")


def _check_data(d: DataConfig) -> None:
    if d.channels is not None and d.channels not in (1, 3):
        fail("data.channels", f"must be 1 or 3, got {d.channels}")
    positive("data.num_points", d.num_points)
    if d.cache_mb < 0:
        fail("data.cache_mb", f"must be >= 0 (0: no cache), got {d.cache_mb}")
    if d.classes is not None and (len(d.classes) < 1 or len(set(d.classes)) != len(d.classes)):
        fail("data.classes", f"must list distinct class names, got {list(d.classes)}")


def _check_model(m: ModelConfig) -> None:
    for key in ("nz", "ngf", "ndf", "hidden", "layers"):
        positive(f"model.{key}", getattr(m, key))
    one_of("model.g_norm", m.g_norm, NORMS)
    one_of("model.d_norm", m.d_norm, NORMS)
    if m.channel_base is not None:
        positive("model.channel_base", m.channel_base)
    for key in ("mapping_layers", "mbstd_group"):
        positive(f"model.{key}", getattr(m, key))
    if not 0 <= m.style_mixing <= 1:
        fail("model.style_mixing", f"must be in [0, 1], got {m.style_mixing}")
    if m.fp16_res < 0:
        fail("model.fp16_res", f"must be >= 0 (0: every block in fp32), got {m.fp16_res}")
    if m.conv_clamp is not None and m.conv_clamp <= 0:
        fail("model.conv_clamp", f"must be > 0 or null (no clamping), got {m.conv_clamp}")
    if m.attention is not None and (m.attention < 4 or m.attention & (m.attention - 1)):
        fail("model.attention", f"must be a power-of-two resolution (e.g. 32 or 64) or null, got {m.attention}")


def _check_loss(lo: LossConfig) -> None:
    if lo.gp_weight is not None and lo.gp_weight < 0:
        fail("loss.gp_weight", f"must be >= 0, got {lo.gp_weight}")
    if isinstance(lo.r1_gamma, str) and lo.r1_gamma != "auto":
        fail("loss.r1_gamma", f"must be a number >= 0 or 'auto' (StyleGAN2-ADA's 0.0002 * res^2 / batch_size), got {lo.r1_gamma!r}")
    for key in ("r1_gamma", "r2_gamma", "pl_weight"):
        if not isinstance(getattr(lo, key), str) and (getattr(lo, key) or 0) < 0:
            fail(f"loss.{key}", f"must be >= 0, got {getattr(lo, key)}")
    for key in ("d_reg_every", "g_reg_every"):
        if getattr(lo, key) is not None:
            positive(f"loss.{key}", getattr(lo, key))
    if lo.n_critic is not None:
        positive("loss.n_critic", lo.n_critic)


def _check_optimizer(key: str, o: OptimizerConfig) -> None:
    positive(f"{key}.lr", o.lr)
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        fail(f"{key}.betas", f"must be two numbers in [0, 1), got {list(o.betas)}")
    if o.weight_decay < 0:
        fail(f"{key}.weight_decay", f"must be >= 0, got {o.weight_decay}")


def _check_train(t: TrainConfig) -> None:
    for key in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every", "num_sample_images"):
        positive(f"train.{key}", getattr(t, key))
    if not 0 <= t.ema_decay < 1:
        fail("train.ema_decay", f"must be in [0, 1), got {t.ema_decay}")
    if isinstance(t.augment_p, str) and t.augment_p != "adaptive" or not isinstance(t.augment_p, str) and not 0 <= t.augment_p <= 1:
        fail("train.augment_p", f"must be a probability in [0, 1] or 'adaptive', got {t.augment_p!r}")
    if not 0 < t.augment_target < 1:
        fail("train.augment_target", f"must be in (0, 1), got {t.augment_target}")
    if t.max_failures < -1:
        fail("train.max_failures", f"must be >= -1 (-1 retries forever), got {t.max_failures}")
    for name, s in t.schedules.items():
        positive(f"train.schedules.{name}.kimg", s.kimg)
        one_of(f"train.schedules.{name}.shape", s.shape, ("cosine", "linear"))
        if min(s.start, s.end) < 0:
            fail(f"train.schedules.{name}", f"start and end must be >= 0, got {s.start} and {s.end}")


def _check_scaling(s: ScalingConfig, t: TrainConfig) -> None:
    _check_workers(s.num_workers)
    if t.batch_per_worker is not None:  # how the batch splits is core.batch.BatchPlan's (checked in ganflow.job)
        positive("train.batch_per_worker", t.batch_per_worker)
    one_of("scaling.placement_strategy", s.placement_strategy, PLACEMENT_STRATEGIES)
    if s.resize_interval_s < 0:
        fail("scaling.resize_interval_s", f"must be >= 0, got {s.resize_interval_s}")
    if s.elastic and t.max_failures == 0:
        fail("train.max_failures", "elastic scaling restarts the group when a worker is lost, which Ray counts as a "
                                   "failure; set it > 0 (or -1: no limit)")
    for res, amount in s.resources_per_worker.items():
        if amount < 0:
            fail(f"scaling.resources_per_worker.{res}", f"must be >= 0, got {amount}")
    if s.sync_batchnorm and not s.use_gpu:
        fail("scaling.sync_batchnorm", "SyncBatchNorm needs GPUs; set scaling.use_gpu=true or drop it")


def _check_eval(cfg: JobConfig) -> None:
    e, t = cfg.eval, cfg.train
    if e.every < 0:
        fail("eval.every", f"must be >= 0 (0: off), got {e.every}")
    if e.every and e.every % t.checkpoint_every:
        fail("eval.every", f"{e.every} is not a multiple of train.checkpoint_every={t.checkpoint_every}, "
                           "so the best evaluated generator would have no checkpoint")
    if e.num_samples < max(2, cfg.scaling.max_workers):
        fail("eval.num_samples", f"must be >= 2 and >= scaling.num_workers (each scores a share), got {e.num_samples}")
    if e.reference_samples < 2:
        fail("eval.reference_samples", f"must be >= 2, got {e.reference_samples}")


def _check_workers(n: Any) -> None:
    ok = isinstance(n, int) and not isinstance(n, bool) and n >= 1 or (
        isinstance(n, (list, tuple)) and len(n) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in n)
        and 1 <= n[0] <= n[1])
    if not ok:
        fail("scaling.num_workers", f"must be a worker count >= 1 or [MIN, MAX] with 1 <= MIN <= MAX (elastic), got {n!r}")


def _check_tracking(w: WandbConfig) -> None:
    if w.project is not None and not WANDB_NAME.match(w.project):
        fail("tracking.wandb.project", f"must be 1-128 letters, digits, '_', '-' or '.', got {w.project!r}")
    if w.entity is not None and not WANDB_NAME.match(w.entity):
        fail("tracking.wandb.entity", f"must be a W&B user or team name, got {w.entity!r}")
    if w.mode is not None:
        one_of("tracking.wandb.mode", w.mode, WANDB_MODES)
    one_of("tracking.wandb.on_error", w.on_error, ON_ERROR)
    for tag in w.tags or []:
        if not tag or len(tag) > 64:
            fail("tracking.wandb.tags", f"tags must be 1-64 characters, got {tag!r}")


def _is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def _check_storage(st: StorageConfig) -> None:
    if not st.uri:
        fail("storage.uri", "must be a directory (e.g. runs) or s3://bucket/prefix")
    if "://" in st.uri and not _is_s3(st.uri):
        fail("storage.uri", f"unsupported scheme in {st.uri.split('://')[0]}://...; use a local path or s3://bucket/prefix")
    if _is_s3(st.uri):
        netloc = urlparse(st.uri).netloc
        if "@" in netloc:
            fail("storage.uri", "credentials do not belong in the URI; " + CREDENTIALS_HINT)
        if not S3_BUCKET.match(netloc):
            fail("storage.uri", f"bucket name {netloc!r} is not valid (3-63 lowercase letters, digits, '.', '-')")
    if st.endpoint_url is not None:
        parsed = urlparse(st.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            fail("storage.endpoint_url", "must be http(s)://host[:port], e.g. http://127.0.0.1:9000")
        if parsed.username or parsed.password:
            fail("storage.endpoint_url", "credentials do not belong in the URL; " + CREDENTIALS_HINT)
        if not _is_s3(st.uri):
            fail("storage.endpoint_url", "only applies to s3:// storage; set storage.uri=s3://bucket/prefix or drop it")
    one_of("storage.retry_mode", st.retry_mode, RETRY_MODES)
    positive("storage.max_attempts", st.max_attempts)


def _yaml_problem(err: "yaml.YAMLError") -> str:
    """PyYAML's multi-line message as one clause: what is wrong, and where (1-based line, column)."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (getattr(err, "problem", None) or str(err).splitlines()[0])


def _explain(err: OmegaConfBaseException) -> ConfigError:
    key = getattr(err, "full_key", None) or "config"
    msg = str(err).splitlines()[0]
    if "Key '" in msg and "not in" in msg or "Missing key" in msg:
        msg = "unknown key; check the spelling against the config reference (docs/config.md)"
    return ConfigError(f"{key}: {msg}")


def _job_layer(path: Optional[str | Path], text: Optional[str], mapping: type):
    where = "the run's config.yaml" if text is not None else str(path)
    if text is None and not Path(path).is_file():
        raise ConfigError(f"job: no such file {str(path)!r}")
    try:
        loaded = OmegaConf.create(text) if text is not None else OmegaConf.load(Path(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"job: {where} is not valid YAML ({_yaml_problem(err)})") from None
    if not isinstance(loaded, mapping):
        raise ConfigError(f"job: {where} must hold a mapping of config sections")
    found = secret_keys_in(OmegaConf.to_container(loaded))
    if found:
        raise ConfigError(found)
    return loaded


def load(path: Optional[str | Path] = None, overrides: Optional[List[str]] = None, text: Optional[str] = None) -> JobConfig:
    """Schema <- YAML (the file at `path`, or `text`: a run's own config.yaml as read from its store)
    <- dotted overrides, typed, with each section's own checks (`ganflow.job.load_job` adds the
    registries' checks and resolves the defaults)."""
    schema = OmegaConf.structured(JobConfig)
    layers = [schema]
    try:
        if path is not None or text is not None:
            layers.append(_job_layer(path, text, type(schema)))
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"{item}: overrides take the form dotted.key=value")
            found = secret_key_message(item.split("=", 1)[0])
            if found:
                raise ConfigError(found)
        try:  # all at once (each merge deep-copies the whole config); one at a time to name a bad one
            merged = OmegaConf.merge(*layers, *([OmegaConf.from_dotlist(list(overrides))] if overrides else []))
        except (yaml.YAMLError, TypeError, ValueError):
            merged = OmegaConf.merge(*layers)
            for item in overrides or []:
                merged = _merge_one(merged, item)
        cfg = OmegaConf.to_object(_free_text_from_environment_redacted(merged))
        OmegaConf.structured(cfg)  # element types of lists (to_object leaves `tags: [[1]]` unchecked)
    except OmegaConfBaseException as err:
        raise _explain(err) from None
    return check_fields(cfg)


def _merge_one(merged: DictConfig, item: str) -> DictConfig:
    key = item.split("=", 1)[0]
    try:
        return OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: the value is not valid YAML ({_yaml_problem(err)}); quote it, e.g. key='[a, b]'") from None
    except OmegaConfBaseException:
        raise
    except (TypeError, ValueError):  # OmegaConf's own, for a list given to a mapping and the like
        raise ConfigError(f"{key}: {item.split('=', 1)[1]!r} is not the kind of value this key holds "
                          "(a list for a mapping, or the reverse); see the config reference (docs/config.md)") from None


FREE_TEXT = ("tracking.wandb.notes", "tracking.wandb.tags")  # fields no check constrains: anything can hide in them


def _free_text_from_environment_redacted(conf: DictConfig) -> DictConfig:
    """Free text taken from the environment (`notes: ${oc.env:OPENAI_KEY}`) is REDACTED before it is
    resolved: it would be saved with the run and sent to W&B. Names, locations and numbers taken
    from it are used as given (they are checked, and needed); credentials among them are still
    redacted by value (`secrets.redact`)."""
    raw = OmegaConf.to_container(conf, resolve=False)
    for key in FREE_TEXT:
        value = _dig(raw, key)
        if isinstance(value, list) and any(from_environment(v) for v in value):
            value = [REDACTED if from_environment(v) else v for v in value]
        elif from_environment(value):
            value = REDACTED
        else:
            continue
        for part in reversed(key.split(".")):
            value = {part: value}
        conf = OmegaConf.merge(conf, value)
    return conf


def _dig(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def from_dict(d: Dict[str, Any]) -> JobConfig:
    """The dataclass again from `to_dict()` output (a Ray worker's config, a checkpoint's manifest),
    as it was saved: already checked and resolved, so not checked again."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(JobConfig), OmegaConf.create(d)))
    except OmegaConfBaseException as err:
        raise _explain(err) from None


def with_values(cfg: JobConfig, values: Dict[str, Any]) -> JobConfig:
    """A copy of `cfg` with these dotted keys set (the config is frozen: a change is a new one);
    typed by the schema, not checked again."""
    conf = OmegaConf.create(cfg.to_dict())
    for key, value in values.items():
        OmegaConf.update(conf, key, value)  # a misspelt key is refused by from_dict's schema
    return from_dict(OmegaConf.to_container(conf))


def redacted(cfg: JobConfig) -> JobConfig:
    """`cfg` with every credential replaced by REDACTED (`secrets.redact`): what a run saves, its
    workers get, and W&B sees."""
    return from_dict(redact(cfg.to_dict()))
