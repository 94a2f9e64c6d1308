"""A job as it runs: the config loaded (ganflow.config), its defaults resolved from the registries
and its sections checked against each other, once, before anything starts; and the objects it
builds. Adding a data set, a model or a loss touches its registry entry, never this file.

`load_job` is what the CLI, sweeps and submissions call; its result (frozen) is what a run saves
as config.yaml and hands its Ray workers as itself; checkpoints rebuild it with `config.from_dict`
(unchecked: it was checked once).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ganflow import data, models
from ganflow.config import ConfigError, JobConfig, load
from ganflow.config.load import fail, one_of
from ganflow.core.augment import AUGMENTATIONS
from ganflow.core.batch import BatchPlan
from ganflow.core.gan import AUTOCAST_DTYPES, PL_BATCH_SHRINK
from ganflow.core.losses import LOSSES
from ganflow.core.schedule import TARGETS
from ganflow.core.state import OPTIMIZERS, TrainingState
from ganflow.metrics.features import EXTRACTORS
from ganflow.metrics.scoring import METRICS, EvalError, check_metrics, default_metrics, ranking
from ganflow.store import is_s3

def load_job(path: Optional[str | Path] = None, overrides: Optional[List[str]] = None) -> JobConfig:
    """The job file with its dotted overrides, resolved and checked: one line naming the key otherwise."""
    return complete(load(path, overrides))


def complete(cfg: JobConfig) -> JobConfig:
    """A loaded job (`config.load`: its file, fields and sections checked) resolved against the
    registries and checked across sections: what `load_job` adds to `config.load`."""
    return check(resolve(cfg))


def auto_r1_gamma(cfg: JobConfig) -> float:
    """StyleGAN2-ADA's `auto` config rule (train.py, cfg_specs['auto']): 0.0002 * res^2 / batch,
    the global batch; the same rule R3GAN's presets scale from."""
    return 0.0002 * cfg.data.resolution ** 2 / cfg.train.batch_size


def resolve(cfg: JobConfig) -> JobConfig:
    """A copy of `cfg` with the defaults that depend on other choices filled in: the loss's penalty
    and critic steps, `loss.r1_gamma: auto`, no D normalisation under spectral norm, no augmentation spelled as ""."""
    one_of("loss.name", cfg.loss.name, tuple(LOSSES))
    one_of("model.name", cfg.model.name, tuple(models.MODELS))
    loss, model = LOSSES[cfg.loss.name], models.spec(cfg.model.name)
    lo, m, t = cfg.loss, cfg.model, cfg.train

    def default(value, fallback):
        return fallback if value is None else value

    return dataclasses.replace(
        cfg,
        loss=dataclasses.replace(lo, gp_weight=default(lo.gp_weight, loss.gp_weight), n_critic=default(lo.n_critic, loss.n_critic),
                                 r1_gamma=auto_r1_gamma(cfg) if lo.r1_gamma == "auto" else float(lo.r1_gamma),
                                 d_reg_every=default(lo.d_reg_every, model.d_reg_every),
                                 g_reg_every=default(lo.g_reg_every, model.g_reg_every),
                                 pl_weight=default(lo.pl_weight, model.pl_weight)),
        model=dataclasses.replace(m, d_norm="none" if m.spectral_norm else m.d_norm),  # SN replaces normalisation in D
        train=dataclasses.replace(t, augment=t.augment or "",
                                  augment_p=t.augment_p if isinstance(t.augment_p, str) else float(t.augment_p)),
    )


def plans(cfg: JobConfig) -> List[BatchPlan]:
    """The batch plan of every worker count the job may train on (elastic: each in its range)."""
    return [BatchPlan.of(cfg.train, n) for n in cfg.scaling.sizes()]


def _check_batch(cfg: JobConfig) -> None:
    s = cfg.scaling
    problems = [(plan.world, plan.problem()) for plan in plans(cfg)]
    bad = [n for n, p in problems if p and p[0] == "train.batch_size"]
    if bad:
        workers = s.num_workers if isinstance(s.num_workers, int) else list(s.num_workers)
        span = f"{s.min_workers}-{s.max_workers} workers" if s.elastic else f"{s.min_workers} worker(s)"
        fail("train.batch_size", f"{cfg.train.batch_size} is not divisible by {', '.join(map(str, bad))} "
                                 f"(scaling.num_workers={workers} trains on {span}); the global batch splits evenly")
    for _, problem in problems:
        if problem:
            fail(*problem)


def check(cfg: JobConfig) -> JobConfig:
    """Cross-section checks, asked of the registries' entries; `cfg` is returned unchanged."""
    for net in ("g", "d"):
        one_of(f"optim.{net}.name", getattr(cfg.optim, net).name, tuple(OPTIMIZERS))
    one_of("train.precision", cfg.train.precision, tuple(AUTOCAST_DTYPES))
    if cfg.train.precision != "fp32" and not cfg.scaling.use_gpu:
        fail("train.precision", f"{cfg.train.precision} needs scaling.use_gpu=true; use fp32 on CPU")
    _check_batch(cfg)
    d, m = cfg.data, cfg.model
    one_of("data.name", d.name, tuple(data.DATASETS))
    ds = data.spec(d.name)
    if ds.needs_path and not d.path:
        fail("data.path", f"is required for data.name={d.name} ({ds.path_help})")
    if ds.is_image:
        r = d.resolution
        if r < 8 or r > 1024 or r & (r - 1):
            fail("data.resolution", f"must be a power of two between 8 and 1024, got {r}")
    if d.classes is not None:
        if not ds.labelled:
            labelled = sorted(n for n, s in data.DATASETS.items() if s.labelled)
            fail("data.classes", f"needs labelled image data ({' or '.join(labelled)}), got data.name={d.name}")
        known = ds.known_classes(d)
        missing = [c for c in d.classes if known is not None and c not in known]
        if missing:
            fail("data.classes", f"{missing} not among the classes {known}")

    one_of("model.name", m.name, tuple(models.MODELS))
    ms = models.spec(m.name)
    if ms.data_kind != ds.kind:
        fitting = [n for n, s in models.MODELS.items() if s.data_kind == ds.kind]
        what = "2D data" if ms.data_kind == "points" else "image data"
        verb = "is for" if ms.data_kind == "points" else "needs"
        fail("model.name", f"{m.name} {verb} {what}; use {' or '.join(fitting)} for data.name={d.name}")
    if ms.needs_labels and not ds.labelled:
        labelled = sorted(n for n, s in data.DATASETS.items() if s.labelled)
        fail("model.name", f"{m.name} needs labelled data ({' or '.join(labelled)}), got data.name={d.name}")

    _check_loss(cfg, ms)
    if ms.check is not None:
        ms.check(cfg)

    if d.xflip and not ds.is_image:
        fail("data.xflip", f"mirrors images; data.name={d.name} is 2D data")
    if cfg.train.augment:
        if not ds.is_image:
            fail("train.augment", "DiffAugment applies to images only; leave it empty for 2D data")
        for policy in cfg.train.augment.split(","):
            one_of("train.augment", policy.strip(), tuple(AUGMENTATIONS))
    elif cfg.train.augment_p != 1.0:
        fail("train.augment_p", "says how often train.augment's ops apply; name them, e.g. train.augment=color,translation,cutout")

    _check_schedules(cfg)
    _check_eval(cfg)
    return cfg


def _check_schedules(cfg: JobConfig) -> None:
    """Each schedule names a target (`core.schedule.TARGETS`) that the rest of the job has."""
    t, lo = cfg.train, cfg.loss
    needs = {
        "adam": (all(o.name in ("adam", "adamw") for o in (cfg.optim.g, cfg.optim.d)), "Adam's betas: optim.g.name and optim.d.name adam or adamw"),
        "ema": (t.ema_decay > 0, "the EMA generator: set train.ema_decay > 0 (the schedule then sets its decay)"),
        "fixed_p": (bool(t.augment) and t.augment_p != "adaptive", "train.augment with a fixed train.augment_p (not adaptive)"),
    }
    for name in t.schedules:
        one_of("train.schedules", name, tuple(TARGETS))
        ok, what = needs.get(TARGETS[name].needs, (True, ""))
        if not ok:
            fail(f"train.schedules.{name}", f"needs {what}")
        if name in ("r1_gamma", "r2_gamma") and not getattr(lo, name):
            fail(f"train.schedules.{name}", f"schedules a penalty that is off: set loss.{name} > 0 (say, to the start value)")


def _check_loss(cfg: JobConfig, ms: models.ModelSpec) -> None:
    """The loss section against the model and the batch: penalties that fit them."""
    lo = cfg.loss
    if LOSSES[lo.name].needs_gp and lo.gp_weight == 0:
        fail("loss.gp_weight", f"must be > 0 for loss.name={lo.name} (10 is the paper's value)")
    if lo.pl_weight and not ms.styles:
        with_styles = sorted(n for n, s in models.MODELS.items() if s.styles)
        fail("loss.pl_weight", f"path-length regularisation needs a style space ({' or '.join(with_styles)}); set it to 0 for {cfg.model.name}")
    for plan in plans(cfg):
        problem = lo.pl_weight and plan.shrink_problem(PL_BATCH_SHRINK)
        if problem:
            fail(problem[0], f"path-length regularisation draws 1/{PL_BATCH_SHRINK} of a batch: {problem[1]}")
    if cfg.scaling.sync_batchnorm and (lo.gp_weight or lo.r1_gamma or lo.r2_gamma):
        fail("scaling.sync_batchnorm", "SyncBatchNorm has no double backward, which the gradient penalties "
                                       "(loss.gp_weight, r1_gamma, r2_gamma) need; drop one of them")


def _check_eval(cfg: JobConfig) -> None:
    e = cfg.eval
    one_of("eval.extractor", e.extractor, ("auto", *EXTRACTORS))
    for name in e.metrics:
        one_of("eval.metrics", name, tuple(METRICS))
    names = e.metrics or default_metrics(cfg)
    if e.every and not names:
        fail("eval.metrics", f"no metric fits data.name={cfg.data.name} yet; choose from {', '.join(METRICS)}")
    try:
        check_metrics(cfg, names)
    except EvalError as err:
        raise ConfigError(str(err)) from None
    if "pr" in names and min(e.num_samples, e.reference_samples) < 4:  # k=3 neighbours need 4 points a side
        fail("eval.num_samples", "pr needs eval.num_samples and eval.reference_samples >= 4")
    if e.reference:
        if not is_s3(e.reference) and not Path(e.reference).expanduser().is_file():
            fail("eval.reference", f"no file at {e.reference}; give an .npz of mu and sigma (a path or s3:// URI)")
        if any(n in ("kid", "pr", "is") for n in names):
            fail("eval.reference", "published statistics give FID only (mu and sigma, no features); set eval.metrics=[fid]")
    if e.best is not None:
        try:
            ranking(names, e.best)
        except EvalError as err:
            raise ConfigError(str(err)) from None


def build_training(cfg: JobConfig, device: torch.device, dataset: Optional[data.Dataset] = None
                   ) -> Tuple[data.Dataset, TrainingState]:
    """Data set (unless given), models and training state for one worker (tests and benchmarks too)."""
    torch.manual_seed(cfg.train.seed)  # identical init on every rank; DDP broadcasts rank 0's anyway
    if dataset is None:
        from ganflow.store import store_options

        dataset = data.build_dataset(cfg.data, cfg.train.seed, store_options(cfg.storage))
    G, D = models.build_models(cfg.model, dataset.shape, dataset.num_classes)
    state = TrainingState.create(cfg, G, D, device)
    if cfg.train.init_from:
        init_weights(cfg, state)
    return dataset, state


def init_networks(cfg: JobConfig, options=None) -> dict:
    """`train.init_from`'s G, D and G_ema state dicts (G's as G_ema when it has none); a ConfigError
    naming the field when the source is missing, unreadable or refused."""
    from ganflow.run.checkpoint import CheckpointError
    from ganflow.run.generator import load_networks
    from ganflow.run.pickles import PickleRefused
    from ganflow.store import StorageError, store_options

    source = cfg.train.init_from
    try:
        nets = load_networks(source, cfg.data.resolution, options or store_options(cfg.storage))
    except (PickleRefused, StorageError, CheckpointError, KeyError, FileNotFoundError) as err:
        fail("train.init_from", f"{source}: {err}")
    nets.setdefault("G_ema", nets["G"])
    return nets


def init_weights(cfg: JobConfig, state: TrainingState) -> None:
    """`train.init_from`'s weights into `state` (step 0, fresh optimizers)."""
    for name, sd in init_networks(cfg).items():
        module = getattr(state, name)
        if module is None:
            continue
        try:
            module.load_state_dict(sd)
        except RuntimeError as err:  # the shapes or names differ
            fail("train.init_from", f"{cfg.train.init_from}: its {name} does not fit this job's model "
                                    f"({str(err).splitlines()[-1].strip()}); init_from needs the same model section")


def batches_for(cfg: JobConfig, dataset: data.Dataset, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
                shard=None):
    """This rank's batches for `fit`, from whichever source the data set has (`data.dataset_batches`;
    `shard`: its part of a streamed data set), with labels when the model takes them, mirrored when
    data.xflip."""
    labels = models.generator_classes(cfg.model.name, dataset.num_classes) > 0
    return data.dataset_batches(dataset, BatchPlan.of(cfg.train, world), cfg.train.seed, labels, rank, device,
                                flip=cfg.data.xflip, shard=shard)
