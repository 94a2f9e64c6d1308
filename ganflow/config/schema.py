"""The job config's schema: one dataclass per section, the words the papers use.

Defaults that depend on other choices (a loss's gradient-penalty weight, ...) are `None` here and
filled by `ganflow.job.resolve`, whose result is what every run saves as config.yaml.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from omegaconf import OmegaConf


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # a data set of the registry (ganflow.data): ring | grid | digits | images | prepared
    path: Optional[str] = None  # folder of PNG/JPEG for `images`; a prepared set (local or s3://) for `prepared`
    resolution: int = 32  # image side length (power of two); ignored by 2D data sets
    channels: Optional[int] = None  # None: 1 for digits, 3 for images, 2 (coordinates) for 2D data
    num_points: int = 20000  # size of the sampled 2D data sets (ring, grid)
    classes: Optional[List[str]] = None  # keep only these classes ("0".."9" for digits, folder names for images)
    xflip: bool = False  # mirror a seeded half of every batch left-right (images)
    cache_mb: int = 256  # prepared sets: images kept in each worker's memory between reads
    verify: bool = True  # prepared sets: check every shard's sha256 against the manifest when first opened


@dataclass(frozen=True)
class ModelConfig:
    name: str = "dcgan"  # a model of the registry (ganflow.models): mlp | dcgan | cdcgan | resnet | stylegan2 | r3gan
    nz: int = 100  # latent size (StyleGAN2: z and w)
    ngf: int = 64  # generator width; each model derives its widths per resolution from it
    ndf: int = 64  # discriminator width, likewise
    hidden: int = 128  # MLP width
    layers: int = 3  # MLP hidden layers
    g_norm: str = "batch"  # batch | none
    d_norm: str = "batch"  # batch | none (forced to none under spectral_norm)
    spectral_norm: bool = False  # spectral normalisation on every D layer (Miyato et al. 2018)
    attention: Optional[int] = None  # resnet: self-attention at this resolution (SAGAN/BigGAN); None: none
    hierarchical: bool = False  # resnet, labelled: BigGAN's hierarchical latents (z split across the G blocks)
    mapping_layers: int = 8  # stylegan2: depth of the mapping network
    style_mixing: float = 0.9  # stylegan2: probability of mixing two latents' styles in a training batch
    channel_base: Optional[int] = None  # stylegan2: block width min(channel_base / res, 8 x ngf); None: 256 x ngf (NVlabs' 1024 px configs: 32768)
    mbstd_group: int = 4  # stylegan2: minibatch standard-deviation group (divides each worker's batch)
    fp16_res: int = 4  # stylegan2: highest resolutions computed in train.precision (the rest in fp32)
    conv_clamp: Optional[float] = 256.0  # stylegan2: activations clamped to +-this in those blocks; None: off


@dataclass(frozen=True)
class LossConfig:
    name: str = "nonsaturating"  # minimax | nonsaturating | lsgan | wgan-gp | hinge | rpgan
    gp_weight: Optional[float] = None  # gradient penalty; None: 10 for wgan-gp, else 0
    r1_gamma: Union[float, int, str] = 0.0  # R1 penalty on real data (Mescheder et al. 2018); 0 disables; "auto": 0.0002 * res^2 / batch_size
    r2_gamma: float = 0.0  # R2: the same zero-centred penalty on fakes (R3GAN); 0 disables
    n_critic: Optional[int] = None  # D steps per G step; None: 5 for wgan-gp, else 1
    d_reg_every: Optional[int] = None  # R1/R2 every N steps, lazily (Adam rescaled); None: the model's (stylegan2 16, else 1)
    g_reg_every: Optional[int] = None  # path length every N steps; None: the model's (stylegan2 4)
    pl_weight: Optional[float] = None  # path-length regularisation; None: the model's (stylegan2 2, else 0)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | rmsprop | sgd
    lr: float = 2e-4
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    g: OptimizerConfig = field(default_factory=OptimizerConfig)
    d: OptimizerConfig = field(default_factory=OptimizerConfig)


@dataclass(frozen=True)
class ScheduleConfig:
    start: float = 0.0
    end: float = 0.0
    kimg: float = 1.0  # thousands of real images over which the value moves from start to end (then holds)
    shape: str = "cosine"  # cosine | linear


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # generator steps
    batch_size: int = 64  # global batch, split evenly across workers
    seed: int = 0
    ema_decay: float = 0.999  # generator EMA; 0 disables
    augment: Optional[str] = None  # DiffAugment policy, e.g. "color,translation,cutout"; empty: off
    augment_p: Union[float, int, str] = 1.0  # chance each op is applied to an image; "adaptive": StyleGAN2-ADA's heuristic
    augment_target: float = 0.6  # adaptive: the E[sign(D(real))] that p steers towards
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; bf16/fp16 need a GPU)
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    num_sample_images: int = 64  # size of the fixed latent batch behind every sample grid
    max_failures: int = 0  # Ray Train FailureConfig: worker-group restarts from the last checkpoint (a lost node is one)
    checkpoint_on_preempt: bool = False  # SIGTERM to a worker (spot reclaim, drain): checkpoint at the next step, then stop
    batch_per_worker: Optional[int] = None  # images a worker computes at once (gradient accumulation); None: its whole share
    channels_last: bool = False  # models and images in channels-last memory format (faster convolutions on GPUs)
    compile: bool = False  # torch.compile G's and D's forward passes (penalty passes stay eager)
    tf32: bool = False  # TF32 matmuls and convolutions on Ampere and newer GPUs
    cudnn_benchmark: bool = True  # cuDNN picks the fastest convolution algorithms for the fixed shapes (as StyleGAN2-ADA)
    init_from: Optional[str] = None  # a run, checkpoint (local or s3://) or StyleGAN2-ADA .pkl whose G, D and G_ema start training (step 0, fresh optimizers)
    schedules: Dict[str, ScheduleConfig] = field(default_factory=dict)  # lr, beta1, beta2, r1_gamma, r2_gamma, augment_p, ema_half_life_kimg


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: Any = 1  # N workers, or [MIN, MAX]: elastic (Ray Train resizes the group as nodes come and go)
    use_gpu: bool = False
    resources_per_worker: Dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    placement_strategy: str = "PACK"  # Ray placement group: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    resize_interval_s: float = 60.0  # elastic: how often a running group looks for room to grow
    sync_batchnorm: bool = False  # convert BatchNorm to SyncBatchNorm (GPU only)

    @property
    def min_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else int(self.num_workers[0])

    @property
    def max_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else int(self.num_workers[1])

    @property
    def elastic(self) -> bool:
        return not isinstance(self.num_workers, int)

    def sizes(self) -> List[int]:
        """Every worker count the group may train with."""
        return list(range(self.min_workers, self.max_workers + 1))


@dataclass(frozen=True)
class StorageConfig:
    uri: str = "runs"  # where runs live: a local directory or s3://bucket/prefix
    endpoint_url: Optional[str] = None  # S3-compatible server (MinIO, Ceph RGW, R2); None: AWS S3
    region: Optional[str] = None  # None: from the AWS chain (AWS_DEFAULT_REGION, profile)
    retry_mode: str = "standard"  # botocore retry mode: standard | adaptive
    max_attempts: int = 10  # botocore attempts per request, first one included


@dataclass(frozen=True)
class WandbConfig:
    """Left out (None), a value comes from W&B's own environment variable, else ganflow's default."""

    project: Optional[str] = None  # None: WANDB_PROJECT, else "ganflow"
    entity: Optional[str] = None  # None: WANDB_ENTITY, else the API key's default entity
    group: Optional[str] = None  # runs to compare side by side (a sweep sets its name); None: WANDB_RUN_GROUP
    job_type: Optional[str] = None  # None: WANDB_JOB_TYPE, else "train"
    tags: Optional[List[str]] = None  # None: WANDB_TAGS (comma-separated), else none; free text, as notes
    notes: Optional[str] = None  # free text: a value taken from the environment (${oc.env:...}) is saved redacted
    mode: Optional[str] = None  # online | offline | disabled; None: WANDB_MODE, else online with WANDB_API_KEY, else offline
    dir: Optional[str] = None  # where W&B writes its files; None: WANDB_DIR, else the run directory (./wandb for s3 runs)
    on_error: str = "fail"  # W&B broken at start: fail (exit 2 before training) | disable (warn, train untracked)
    log_checkpoints: bool = True  # each checkpoint as an artifact that references its storage URI
    upload_generator: bool = False  # the final generator artifact holds its files (always for a local storage.uri)


@dataclass(frozen=True)
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0  # evaluate the EMA generator every N steps (a multiple of train.checkpoint_every); 0: off
    num_samples: int = 2000
    metrics: List[str] = field(default_factory=list)  # empty: what the data set declares (ganflow.data)
    best: Optional[str] = None  # the value that marks the best checkpoint; None: the first metric's headline
    extractor: str = "auto"  # inception | digits | auto (digits classifier for digits data, else inception)
    inception_weights: Optional[str] = None  # path or s3:// URI; None: the cache folders (metrics/inception.py)
    reference_samples: int = 10000  # real images behind the cached reference statistics
    reference: Optional[str] = None  # published statistics (.npz of mu, sigma; path or s3://): FID against them


@dataclass(frozen=True)
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
