"""`ganflow sample`: rebuild the generator from a checkpoint alone and draw samples.

.npz: float32 `images` (N, C, H, W) in [-1, 1] (+ int64 `labels` for conditional models), or
float32 `samples` (N, 2) for 2D models. .png: a grid (images) or a scatter plot (2D).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

from ganflow import checkpoint as ckpt
from ganflow.config import JobConfig, from_dict
from ganflow.data import rng_seed
from ganflow.models import build_models
from ganflow.objectstore import is_s3
from ganflow.runs import Run
from ganflow.storage import write_atomic
from ganflow.tracking import WANDB_SCHEME, resolve_artifact
from ganflow.visual import grid_png, scatter_png


class SampleError(ValueError):
    pass


class LoadedGenerator(NamedTuple):
    G: torch.nn.Module  # in eval mode; the EMA weights when the run has them
    meta: dict  # what the data looked like: sample shape, classes, 2D centres
    location: str  # the checkpoint it came from
    config: JobConfig  # the run's resolved config
    step: int
    D: Optional[torch.nn.Module] = None  # in eval mode, when asked for


def load_generator(run_or_checkpoint: str | Path, with_discriminator: bool = False) -> LoadedGenerator:
    """The generator of a checkpoint, or of a run's newest intact checkpoint. `s3://` locations
    are read through boto3 (endpoint from AWS_ENDPOINT_URL, credentials from the AWS chain) and
    checked against their sha256 like local ones. `wandb:project/name:alias` names a checkpoint
    through the W&B artifact ganflow logged for it. The discriminator comes too when asked for
    (anomaly scores)."""
    if str(run_or_checkpoint).startswith(WANDB_SCHEME):
        run_or_checkpoint = resolve_artifact(str(run_or_checkpoint))
    if is_s3(run_or_checkpoint):
        state, manifest, path = _load_from_s3(str(run_or_checkpoint))
        component = "G_ema" if "G_ema" in state else "G"
    else:
        path = ckpt.resolve_checkpoint(Path(run_or_checkpoint))
        manifest = ckpt.read_manifest(path)
        component = "G_ema" if "G_ema" in manifest["state"] else "G"
        state, manifest = ckpt.load_checkpoint(path, components=[component] + (["D"] if with_discriminator else []))
    cfg = from_dict(manifest["config"])
    meta = manifest["meta"]
    G, D = build_models(cfg.model, tuple(meta["sample_shape"]), meta["num_classes"])
    G.load_state_dict(state[component])
    if with_discriminator:
        D.load_state_dict(state["D"])
    return LoadedGenerator(G.eval(), meta, str(path), cfg, int(manifest["step"]), D.eval() if with_discriminator else None)


def _load_from_s3(uri: str) -> tuple:
    """(state, manifest, uri) of a checkpoint URI, or of the newest intact checkpoint of a run URI."""
    run = Run.open(uri)
    if run.store.exists(ckpt.MANIFEST):
        with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as cache:
            state, manifest = ckpt.load_checkpoint(ckpt.fetch(run.store, "", Path(cache)))
        return state, manifest, run.uri
    found = run.load_latest_checkpoint()
    if found is None:
        raise ckpt.CheckpointError(f"{run.uri}: no complete checkpoint under {run.store.uri('checkpoints')}")
    checkpoint_uri, state, manifest = found
    return state, manifest, checkpoint_uri


@torch.no_grad()
def generate(G: torch.nn.Module, num: int, seed: int = 0, label: Optional[int] = None, batch: int = 512,
             rows: slice = slice(None)):
    """(samples, labels or None), deterministic in `seed`; `rows` picks a share of the `num` (a
    worker's, when several split one evaluation): the same rows as in the whole batch."""
    classes = getattr(G, "num_classes", 0)
    if label is not None and not classes:
        raise SampleError("--label: this model is not class-conditional")
    if label is not None and not 0 <= label < classes:
        raise SampleError(f"--label: must be in [0, {classes - 1}], got {label}")
    g = torch.Generator().manual_seed(rng_seed(seed, 0x5A))  # drawn on the CPU: the same samples on any device
    z = torch.randn(num, G.nz, generator=g)
    y = None
    if classes:
        y = torch.full((num,), label) if label is not None else torch.randint(classes, (num,), generator=g)
    z, y = z[rows], (y[rows] if y is not None else None)
    device = next(G.parameters()).device
    out = [G(z[i : i + batch].to(device), y[i : i + batch].to(device) if y is not None else None).float().cpu()
           for i in range(0, len(z), batch)]
    return torch.cat(out).clamp(-1, 1) if out[0].dim() == 4 else torch.cat(out), y


def sample_to_file(run: str | Path, num: int, out: Path, seed: int = 0, label: Optional[int] = None) -> Path:
    if num <= 0:
        raise SampleError(f"--num: must be > 0, got {num}")
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".png"):
        raise SampleError(f"--out: {out} must end in .npz or .png")
    G, meta = load_generator(run)[:2]
    x, y = generate(G, num, seed, label)
    if suffix == ".png":
        centers = torch.tensor(meta["centers"]) if meta.get("centers") else None
        data = scatter_png(x, centers) if x.dim() == 2 else grid_png(x)
    else:
        arrays = {"samples": x.numpy().astype(np.float32)} if x.dim() == 2 else {"images": x.numpy().astype(np.float32)}
        if y is not None:
            arrays["labels"] = y.numpy().astype(np.int64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    write_atomic(out, data)
    return out


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, row-wise: Gaussian latents live near a sphere, and the straight
    line between two of them passes through low-norm z the generator rarely saw."""
    a, b = z0 / z0.norm(dim=-1, keepdim=True), z1 / z1.norm(dim=-1, keepdim=True)
    omega = torch.acos((a * b).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * z0 + (torch.sin(t * omega) / so) * z1


@torch.no_grad()
def interpolation_grid(G: torch.nn.Module, rows: int, steps: int, seed: int = 0) -> torch.Tensor:
    """(rows * steps, C, H, W): each row walks from one latent to another. Conditional models: a
    row per class, every row along the same latent path, so rows differ only by their class."""
    if steps < 2:
        raise SampleError(f"--steps: must be >= 2, got {steps}")
    classes = getattr(G, "num_classes", 0)
    rows = classes if classes else rows
    if rows < 1:
        raise SampleError(f"--rows: must be >= 1, got {rows}")
    g = torch.Generator().manual_seed(rng_seed(seed, 0x1E))
    ends = torch.randn(1 if classes else rows, 2, G.nz, generator=g).expand(rows, 2, G.nz)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = slerp(ends[:, :1], ends[:, 1:], t).reshape(rows * steps, G.nz)
    y = torch.arange(rows).repeat_interleave(steps) if classes else None
    device = next(G.parameters()).device
    out = G(z.to(device), y.to(device) if y is not None else None).float().cpu()
    if out.dim() != 4:
        raise SampleError("interpolate: this run's generator makes 2D points, not images; use `ganflow sample --out x.png`")
    return out.clamp(-1, 1)


def interpolate_to_file(run: str | Path, out: Path, rows: int = 8, steps: int = 10, seed: int = 0) -> Path:
    if out.suffix.lower() != ".png":
        raise SampleError(f"--out: {out} must end in .png")
    images = interpolation_grid(load_generator(run).G, rows, steps, seed)
    write_atomic(out, grid_png(images, nrow=steps))
    return out
