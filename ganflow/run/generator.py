"""A trained generator back from a checkpoint alone: the model rebuilt from the manifest's config
and DataMeta, its weights (the EMA ones when the run has them) checked against their sha256."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import torch

from ganflow.config import JobConfig, from_dict
from ganflow.core.state import DataMeta
from ganflow.models import build_models
from ganflow.run import checkpoint as ckpt
from ganflow.run.layout import RunLayout
from ganflow.run.run import Run
from ganflow.store import S3Options, is_s3, open_store


class LoadedGenerator(NamedTuple):
    G: torch.nn.Module  # in eval mode; the EMA weights when the run has them
    meta: DataMeta  # what the data looked like: sample shape, classes, 2D centres
    location: str  # the checkpoint it came from
    config: JobConfig  # the run's resolved config
    step: int
    D: Optional[torch.nn.Module] = None  # in eval mode, when asked for
    component: str = "G"  # the checkpoint component the weights came from: G_ema or G


def load_generator(run_or_checkpoint: str | Path, with_discriminator: bool = False,
                   options: S3Options = S3Options()) -> LoadedGenerator:
    """The generator of a checkpoint, or of a run's newest intact checkpoint, local or `s3://`
    (endpoint from AWS_ENDPOINT_URL unless `options` name one, credentials from the AWS chain).
    The discriminator comes too when asked for (anomaly scores)."""
    if is_s3(run_or_checkpoint):
        state, manifest, path = _load_from_store(str(run_or_checkpoint), options)
        component = "G_ema" if "G_ema" in state else "G"
    else:
        path = ckpt.resolve_checkpoint(Path(run_or_checkpoint))
        manifest = ckpt.read_manifest(path)
        component = "G_ema" if "G_ema" in manifest["state"] else "G"
        state, manifest = ckpt.load_checkpoint(path, components=[component] + (["D"] if with_discriminator else []))
    cfg = from_dict(manifest["config"])
    meta = DataMeta.from_dict(manifest["meta"])
    G, D = build_models(cfg.model, meta.sample_shape, meta.num_classes)
    G.load_state_dict(state[component])
    if with_discriminator:
        D.load_state_dict(state["D"])
    return LoadedGenerator(G.eval(), meta, str(path), cfg, int(manifest["step"]), D.eval() if with_discriminator else None,
                           component)


def _load_from_store(uri: str, options: S3Options) -> tuple:
    """(state, manifest, uri) of a checkpoint URI, or of the newest intact checkpoint of a run URI."""
    run = Run.open(uri, options)
    if run.store.exists(RunLayout.MANIFEST):
        with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as cache:
            state, manifest = ckpt.load_checkpoint(ckpt.fetch(run.store, "", Path(cache)))
        return state, manifest, run.uri
    found = run.load_latest_checkpoint()
    if found is None:
        raise ckpt.CheckpointError(f"{run.uri}: no complete checkpoint under {run.store.uri(RunLayout.CHECKPOINTS)}")
    checkpoint_uri, state, manifest = found
    return state, manifest, checkpoint_uri


def pickle_networks(top: Dict[str, Any], resolution: int) -> Dict[str, Dict[str, torch.Tensor]]:
    """A StyleGAN2-ADA network pickle's G, D and G_ema (`run.pickles.read_network_pickle`) under
    ganflow's names: the one mapping `ganflow import` and `train.init_from` use."""
    from ganflow.models.interop import stylegan2_discriminator_state, stylegan2_generator_state

    return {"G": stylegan2_generator_state(top["G"].state_dict()),
            "D": stylegan2_discriminator_state(top["D"].state_dict(), resolution),
            "G_ema": stylegan2_generator_state(top["G_ema"].state_dict())}


def load_networks(source: str, resolution: int, options: S3Options = S3Options()) -> Dict[str, Dict[str, torch.Tensor]]:
    """G, D and G_ema state dicts (ganflow's names) of a run's newest checkpoint, a checkpoint, or a
    StyleGAN2-ADA network pickle (read as data, names mapped): what `train.init_from` starts from."""
    if source.endswith(".pkl"):
        from ganflow.run.pickles import read_network_pickle

        parent, _, name = source.rpartition("/")
        return pickle_networks(read_network_pickle(open_store(parent or ".", options).get_bytes(name)), resolution)
    if is_s3(source):
        state, _, _ = _load_from_store(source, options)
    else:
        state, _ = ckpt.load_checkpoint(ckpt.resolve_checkpoint(Path(source)), components=["G", "D", "G_ema"])
    return {k: state[k] for k in ("G", "D", "G_ema") if k in state}
