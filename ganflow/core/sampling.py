"""Drawing from a generator, pure torch: samples deterministic in a seed (any device, any share of
the batch), and spherical latent interpolations. Every generator has `nz` and `num_classes`
(0: unconditional), set by `ganflow.models.build_models` from the model's declared traits."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ganflow.core.rng import STREAM_FIXED, SampleNoise, generator_for, rng_seed, sample_latents

NOISE_MODES = ("random", "const")


class SampleError(ValueError):
    """A request the generator cannot serve (a label it does not take, a bad count)."""


@torch.no_grad()
def generate(G: torch.nn.Module, num: int, seed: int = 0, label: Union[int, Sequence[int], torch.Tensor, None] = None,
             batch: int = 512, rows: slice = slice(None), truncation: Optional[float] = None, noise: str = "random"):
    """(samples, labels or None), deterministic in `seed`; `label`: one class for every sample, one
    per sample, or None (drawn); `rows` picks a share of the `num` (a
    worker's, when several split one evaluation): the same rows as in the whole batch.
    `truncation`: psi of a generator with a style space (G(z, y, truncation=psi)). `noise`: a
    generator with noise inputs (StyleGAN2) gets fresh noise per sample ("random", as the
    reference's metrics) or its constant noise ("const", as the reference's snapshots)."""
    if noise not in NOISE_MODES:
        raise SampleError(f"--noise: {noise!r}; choose one of {', '.join(NOISE_MODES)}")
    z, y = draw_latents(G, num, seed, label)
    z, y, index = z[rows], (y[rows] if y is not None else None), range(num)[rows]
    device = next(G.parameters()).device
    kwargs = {"truncation": truncation} if truncation is not None else {}
    random_noise = noise == "random" and getattr(G, "random_inputs", False)
    out = [G(z[i : i + batch].to(device), y[i : i + batch].to(device) if y is not None else None, **kwargs,
             **({"noise": SampleNoise(seed, index[i], len(index[i : i + batch]))} if random_noise else {})).float().cpu()
           for i in range(0, len(z), batch)]
    return torch.cat(out).clamp(-1, 1) if out[0].dim() == 4 else torch.cat(out), y


def draw_latents(G: torch.nn.Module, num: int, seed: int = 0,
                 label: Union[int, Sequence[int], torch.Tensor, None] = None) -> tuple:
    """(z, labels or None) of `generate`'s samples: on the CPU, deterministic in `seed`."""
    classes = G.num_classes
    given = None if label is None else torch.as_tensor(label, dtype=torch.long).reshape(-1)
    if given is not None and not classes:
        raise SampleError("--label: this model is not class-conditional")
    if given is not None and len(given) not in (1, num):
        raise SampleError(f"labels: one label, or one for each of the {num} samples; got {len(given)}")
    if given is not None and not bool(((given >= 0) & (given < classes)).all()):
        raise SampleError(f"--label: must be in [0, {classes - 1}], got {given[(given < 0) | (given >= classes)][0].item()}")
    g = torch.Generator().manual_seed(rng_seed(seed, 0x5A))  # drawn on the CPU: the same samples on any device
    z = torch.randn(num, G.nz, generator=g)
    y = None
    if classes:
        y = given.expand(num).clone() if given is not None else torch.randint(classes, (num,), generator=g)
    return z, y


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
    classes = G.num_classes
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


def fixed_latents(seed: int, nz: int, num_classes: int, n: int, device: torch.device | str = "cpu") -> tuple:
    """The latent batch behind every sample grid of a run (labels cycle through the classes)."""
    z, _ = sample_latents(n, nz, 0, generator_for(torch.device("cpu"), seed, STREAM_FIXED, 0), "cpu")
    y = torch.arange(n) % num_classes if num_classes else None
    return z.to(device), (y.to(device) if y is not None else None)


@torch.no_grad()
def draw(G: torch.nn.Module, fixed: tuple) -> torch.Tensor:
    """G's output on `fixed` latents, in eval mode (then back to the mode it was in)."""
    was_training = G.training
    G.eval()
    out = G(*fixed)
    G.train(was_training)
    return out
