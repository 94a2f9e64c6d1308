"""Typed job config: dataclass schema -> OmegaConf merge (YAML, dotted overrides) -> validated JobConfig.

Every error is a `ConfigError` whose message starts with the dotted key, so the CLI can print one
line and exit 2 before any Ray work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganflow.objectstore import is_s3


class ConfigError(ValueError):
    """A bad job config; the message names the dotted key and what would fix it."""


@dataclass
class DataConfig:
    name: str = "digits"  # ring | grid | digits | images
    path: Optional[str] = None  # folder of PNG/JPEG for `images`
    resolution: int = 32  # image side length (power of two); ignored by 2D data sets
    channels: Optional[int] = None  # None: 1 for digits, 3 for images, 2 (coordinates) for 2D data
    num_points: int = 20000  # size of the sampled 2D data sets (ring, grid)
    classes: Optional[List[str]] = None  # keep only these classes ("0".."9" for digits, folder names for images)


@dataclass
class ModelConfig:
    name: str = "dcgan"  # mlp | dcgan | cdcgan
    nz: int = 100  # latent size
    ngf: int = 64  # generator width (DCGAN)
    ndf: int = 64  # discriminator width (DCGAN)
    hidden: int = 128  # MLP width
    layers: int = 3  # MLP hidden layers
    g_norm: str = "batch"  # batch | none
    d_norm: str = "batch"  # batch | none (forced to none under spectral_norm)
    spectral_norm: bool = False  # spectral normalisation on every D layer (Miyato et al. 2018)


@dataclass
class LossConfig:
    name: str = "nonsaturating"  # minimax | nonsaturating | lsgan | wgan-gp | hinge
    gp_weight: Optional[float] = None  # gradient penalty; None: 10 for wgan-gp, else 0
    r1_gamma: float = 0.0  # R1 penalty on real data (Mescheder et al. 2018); 0 disables
    n_critic: Optional[int] = None  # D steps per G step; None: 5 for wgan-gp, else 1


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | rmsprop | sgd
    lr: float = 2e-4
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0


@dataclass
class OptimConfig:
    g: OptimizerConfig = field(default_factory=OptimizerConfig)
    d: OptimizerConfig = field(default_factory=OptimizerConfig)


@dataclass
class TrainConfig:
    steps: int = 2000  # generator steps
    batch_size: int = 64  # global batch, split evenly across workers
    seed: int = 0
    ema_decay: float = 0.999  # generator EMA; 0 disables
    augment: Optional[str] = None  # DiffAugment policy, e.g. "color,translation,cutout"; empty: off
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; bf16/fp16 need a GPU)
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    num_sample_images: int = 64  # size of the fixed latent batch behind every sample grid
    max_failures: int = 0  # Ray Train FailureConfig: worker-group restarts from the last checkpoint


@dataclass
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: Dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    sync_batchnorm: bool = False  # convert BatchNorm to SyncBatchNorm (GPU only)


@dataclass
class StorageConfig:
    uri: str = "runs"  # where runs live: a local directory or s3://bucket/prefix
    endpoint_url: Optional[str] = None  # S3-compatible server (MinIO, Ceph RGW, R2); None: AWS S3
    region: Optional[str] = None  # None: from the AWS chain (AWS_DEFAULT_REGION, profile)
    retry_mode: str = "standard"  # botocore retry mode: standard | adaptive
    max_attempts: int = 10  # botocore attempts per request, first one included


@dataclass
class WandbConfig:
    project: str = "ganflow"
    entity: Optional[str] = None  # None: the API key's default entity
    group: Optional[str] = None  # runs to compare side by side (a sweep sets its name)
    job_type: str = "train"
    tags: List[str] = field(default_factory=list)
    notes: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; None: WANDB_MODE, else online with WANDB_API_KEY, else offline
    dir: Optional[str] = None  # where W&B writes its files; None: WANDB_DIR, else the run directory (./wandb for s3 runs)
    on_error: str = "fail"  # W&B broken at start: fail (exit 2 before training) | disable (warn, train untracked)
    log_checkpoints: bool = True  # each checkpoint as an artifact that references its storage URI


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvalConfig:
    every: int = 0  # evaluate the EMA generator every N steps (a multiple of train.checkpoint_every); 0: off
    num_samples: int = 2000
    metrics: List[str] = field(default_factory=list)  # empty: what fits the data (see evaluate.DEFAULT_FOR_DATA)
    best: Optional[str] = None  # the value that marks the best checkpoint; None: the first metric's headline
    extractor: str = "auto"  # inception | digits | auto (digits classifier for digits data, else inception)
    inception_weights: Optional[str] = None  # path or s3:// URI; None: the cache folders (metrics/inception.py)
    reference_samples: int = 10000  # real images behind the cached reference statistics


@dataclass
class JobConfig:
    name: str = "quickstart"  # the experiment: runs live under <storage.uri>/<name>/<run_id>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(OmegaConf.structured(self))

    def hash(self) -> str:
        """Stable short hash of the resolved config, recorded in every checkpoint manifest."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def n_critic(self) -> int:
        return self.loss.n_critic  # resolved by validate()

    @property
    def is_image(self) -> bool:
        return self.data.name not in TWO_D_DATASETS


TWO_D_DATASETS = ("ring", "grid")
PRECISIONS = ("fp32", "bf16", "fp16")
NORMS = ("batch", "none")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


def _known_names() -> Dict[str, tuple]:
    # Imported lazily: the registries live with the code they name.
    from ganflow.augment import AUGMENTATIONS
    from ganflow.data import DATASETS
    from ganflow.losses import LOSSES
    from ganflow.models import MODELS

    return {"data": tuple(DATASETS), "model": tuple(MODELS), "loss": tuple(LOSSES), "augment": tuple(AUGMENTATIONS)}


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def _one_of(key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        _fail(key, f"unknown value {value!r}; choose one of {', '.join(choices)}")


def _positive(key: str, value: float) -> None:
    if not (value > 0) or (isinstance(value, float) and not math.isfinite(value)):
        _fail(key, f"must be > 0, got {value}")


def validate(cfg: JobConfig) -> JobConfig:
    """Range and cross-field checks; fills the loss defaults that depend on the loss name."""
    names = _known_names()
    if not cfg.name or "/" in cfg.name:
        _fail("name", f"must be a non-empty name without '/', got {cfg.name!r}")

    d = cfg.data
    _one_of("data.name", d.name, names["data"])
    if d.name == "images" and not d.path:
        _fail("data.path", "is required for data.name=images (a folder of PNG/JPEG files)")
    if cfg.is_image:
        r = d.resolution
        if r < 8 or r > 1024 or r & (r - 1):
            _fail("data.resolution", f"must be a power of two between 8 and 1024, got {r}")
    if d.channels is not None and d.channels not in (1, 3):
        _fail("data.channels", f"must be 1 or 3, got {d.channels}")
    _positive("data.num_points", d.num_points)
    if d.classes is not None:
        if d.name not in ("digits", "images"):
            _fail("data.classes", f"needs labelled image data (digits or images), got data.name={d.name}")
        if len(d.classes) < 1 or len(set(d.classes)) != len(d.classes):
            _fail("data.classes", f"must list distinct class names, got {list(d.classes)}")
        if is_s3(d.path or ""):
            _fail("data.classes", "is not supported for s3:// images yet; give the classes their own prefix")
        known = [str(k) for k in range(10)] if d.name == "digits" else (
            sorted(p.name for p in Path(d.path).iterdir() if p.is_dir()) if Path(d.path or "").is_dir() else None)
        missing = [c for c in d.classes if known is not None and c not in known]
        if missing:
            _fail("data.classes", f"{missing} not among the classes {known}")

    m = cfg.model
    _one_of("model.name", m.name, names["model"])
    if cfg.is_image and m.name == "mlp":
        _fail("model.name", f"mlp is for 2D data; use dcgan or cdcgan for data.name={d.name}")
    if not cfg.is_image and m.name != "mlp":
        _fail("model.name", f"{m.name} needs image data; use mlp for data.name={d.name}")
    if m.name == "cdcgan" and d.name not in ("digits", "images"):
        _fail("model.name", f"cdcgan needs labelled data (digits or images), got data.name={d.name}")
    for key in ("nz", "ngf", "ndf", "hidden", "layers"):
        _positive(f"model.{key}", getattr(m, key))
    _one_of("model.g_norm", m.g_norm, NORMS)
    _one_of("model.d_norm", m.d_norm, NORMS)
    if m.spectral_norm:
        m.d_norm = "none"  # SN replaces normalisation in D

    lo = cfg.loss
    _one_of("loss.name", lo.name, names["loss"])
    if lo.gp_weight is None:
        lo.gp_weight = 10.0 if lo.name == "wgan-gp" else 0.0
    if lo.gp_weight < 0:
        _fail("loss.gp_weight", f"must be >= 0, got {lo.gp_weight}")
    if lo.name == "wgan-gp" and lo.gp_weight == 0:
        _fail("loss.gp_weight", "must be > 0 for loss.name=wgan-gp (10 is the paper's value)")
    if lo.r1_gamma < 0:
        _fail("loss.r1_gamma", f"must be >= 0, got {lo.r1_gamma}")
    if lo.n_critic is None:
        lo.n_critic = 5 if lo.name == "wgan-gp" else 1
    _positive("loss.n_critic", lo.n_critic)

    for net in ("g", "d"):
        o: OptimizerConfig = getattr(cfg.optim, net)
        _one_of(f"optim.{net}.name", o.name, OPTIMIZERS)
        _positive(f"optim.{net}.lr", o.lr)
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            _fail(f"optim.{net}.betas", f"must be two numbers in [0, 1), got {list(o.betas)}")
        if o.weight_decay < 0:
            _fail(f"optim.{net}.weight_decay", f"must be >= 0, got {o.weight_decay}")

    t = cfg.train
    for key in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every", "num_sample_images"):
        _positive(f"train.{key}", getattr(t, key))
    if not 0 <= t.ema_decay < 1:
        _fail("train.ema_decay", f"must be in [0, 1), got {t.ema_decay}")
    _one_of("train.precision", t.precision, PRECISIONS)
    if t.precision != "fp32" and not cfg.scaling.use_gpu:
        _fail("train.precision", f"{t.precision} needs scaling.use_gpu=true; use fp32 on CPU")
    t.augment = t.augment or ""
    if t.augment:
        if not cfg.is_image:
            _fail("train.augment", "DiffAugment applies to images only; leave it empty for 2D data")
        for policy in t.augment.split(","):
            _one_of("train.augment", policy.strip(), names["augment"])
    if t.max_failures < -1:
        _fail("train.max_failures", f"must be >= -1 (-1 retries forever), got {t.max_failures}")

    s = cfg.scaling
    _positive("scaling.num_workers", s.num_workers)
    if t.batch_size % s.num_workers:
        _fail("train.batch_size", f"{t.batch_size} is not divisible by scaling.num_workers={s.num_workers}")
    for res, amount in s.resources_per_worker.items():
        if amount < 0:
            _fail(f"scaling.resources_per_worker.{res}", f"must be >= 0, got {amount}")
    if s.sync_batchnorm and not s.use_gpu:
        _fail("scaling.sync_batchnorm", "SyncBatchNorm needs GPUs; set scaling.use_gpu=true or drop it")

    _validate_storage(cfg.storage)
    _validate_tracking(cfg.tracking.wandb)
    _validate_eval(cfg)
    return cfg


WANDB_MODES = ("online", "offline", "disabled")
ON_ERROR = ("fail", "disable")
WANDB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _validate_tracking(w: WandbConfig) -> None:
    if not WANDB_NAME.match(w.project):
        _fail("tracking.wandb.project", f"must be 1-128 letters, digits, '_', '-' or '.', got {w.project!r}")
    if w.entity is not None and not WANDB_NAME.match(w.entity):
        _fail("tracking.wandb.entity", f"must be a W&B user or team name, got {w.entity!r}")
    if w.mode is not None:
        _one_of("tracking.wandb.mode", w.mode, WANDB_MODES)
    _one_of("tracking.wandb.on_error", w.on_error, ON_ERROR)
    for tag in w.tags:
        if not tag or len(tag) > 64:
            _fail("tracking.wandb.tags", f"tags must be 1-64 characters, got {tag!r}")


def _validate_eval(cfg: JobConfig) -> None:
    from ganflow.evaluate import METRICS, EvalError, check_metrics, default_metrics, ranking

    e = cfg.eval
    if e.every < 0:
        _fail("eval.every", f"must be >= 0 (0: off), got {e.every}")
    if e.every and e.every % cfg.train.checkpoint_every:
        _fail("eval.every", f"{e.every} is not a multiple of train.checkpoint_every={cfg.train.checkpoint_every}, "
                            "so the best evaluated generator would have no checkpoint")
    if e.num_samples < max(2, cfg.scaling.num_workers):
        _fail("eval.num_samples", f"must be >= 2 and >= scaling.num_workers (each scores a share), got {e.num_samples}")
    _one_of("eval.extractor", e.extractor, ("auto", "inception", "digits"))
    if e.reference_samples < 2:
        _fail("eval.reference_samples", f"must be >= 2, got {e.reference_samples}")
    for name in e.metrics:
        _one_of("eval.metrics", name, tuple(METRICS))
    names = e.metrics or default_metrics(cfg)
    if e.every and not names:
        _fail("eval.metrics", f"no metric fits data.name={cfg.data.name} yet; choose from {', '.join(METRICS)}")
    try:
        check_metrics(cfg, names)
    except EvalError as err:
        raise ConfigError(str(err)) from None
    if "pr" in names and min(e.num_samples, e.reference_samples) < 4:  # k=3 neighbours need 4 points a side
        _fail("eval.num_samples", "pr needs eval.num_samples and eval.reference_samples >= 4")
    if e.best is not None:
        try:
            ranking(names, e.best)
        except EvalError as err:
            raise ConfigError(str(err)) from None


RETRY_MODES = ("standard", "adaptive")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _validate_storage(st: StorageConfig) -> None:
    if not st.uri:
        _fail("storage.uri", "must be a directory (e.g. runs) or s3://bucket/prefix")
    if "://" in st.uri and not is_s3(st.uri):
        _fail("storage.uri", f"unsupported scheme in {st.uri.split('://')[0]}://...; use a local path or s3://bucket/prefix")
    if is_s3(st.uri):
        netloc = urlparse(st.uri).netloc
        if "@" in netloc:
            _fail("storage.uri", "credentials do not belong in the URI; " + CREDENTIALS_HINT)
        if not S3_BUCKET.match(netloc):
            _fail("storage.uri", f"bucket name {netloc!r} is not valid (3-63 lowercase letters, digits, '.', '-')")
    if st.endpoint_url is not None:
        parsed = urlparse(st.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            _fail("storage.endpoint_url", "must be http(s)://host[:port], e.g. http://127.0.0.1:9000")
        if parsed.username or parsed.password:
            _fail("storage.endpoint_url", "credentials do not belong in the URL; " + CREDENTIALS_HINT)
        if not is_s3(st.uri):
            _fail("storage.endpoint_url", "only applies to s3:// storage; set storage.uri=s3://bucket/prefix or drop it")
    _one_of("storage.retry_mode", st.retry_mode, RETRY_MODES)
    _positive("storage.max_attempts", st.max_attempts)


CREDENTIALS_HINT = ("credentials come from the AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, or an instance/pod role")
# Key names that hold secrets. A job config is saved with every run, so it must never carry one.
SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access_key|api_key|apikey)", re.IGNORECASE)


def _refuse_secret_key(key: str) -> None:
    """Refuse a secret-looking key by name, before the schema's generic unknown-key error (which
    would be right too, but would not say where credentials go). Values are never echoed."""
    if SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        _fail(key, "credentials do not belong in a job config (it is saved with every run); " + CREDENTIALS_HINT)


def _reject_secrets(node: Any, prefix: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            _refuse_secret_key(key)
            _reject_secrets(v, key)


def _explain(err: OmegaConfBaseException) -> ConfigError:
    key = getattr(err, "full_key", None) or "config"
    msg = str(err).splitlines()[0]
    if "Key '" in msg and "not in" in msg or "Missing key" in msg:
        msg = "unknown key; check the spelling against the config reference in README.md"
    return ConfigError(f"{key}: {msg}")


def load(path: Optional[str | Path] = None, overrides: Optional[List[str]] = None) -> JobConfig:
    """Schema <- YAML file <- dotted overrides, then type and range checks."""
    schema = OmegaConf.structured(JobConfig)
    layers = [schema]
    try:
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"job: no such file {str(p)!r}")
            loaded = OmegaConf.load(p)
            if not isinstance(loaded, type(schema)):
                raise ConfigError(f"job: {p} must hold a mapping of config sections")
            _reject_secrets(OmegaConf.to_container(loaded))
            layers.append(loaded)
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"{item}: overrides take the form dotted.key=value")
            _refuse_secret_key(item.split("=", 1)[0])
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _explain(err) from None
    return validate(cfg)


def from_dict(d: Dict[str, Any]) -> JobConfig:
    """Rebuild the dataclass from `to_dict()` output (Ray workers, checkpoint manifests)."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(JobConfig), OmegaConf.create(d)))
    except OmegaConfBaseException as err:
        raise _explain(err) from None
    return validate(cfg)
