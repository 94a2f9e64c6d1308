"""Random streams: every draw is a pure function of (seed, stream, index), made for the whole
global batch and sliced per worker, so a resumed run, a restarted worker and a different number of
workers all see the same numbers."""

from __future__ import annotations

import numpy as np
import torch

# Streams of one run (the data sets and the CLI verbs use their own constants beside these).
STREAM_LATENT, STREAM_AUGMENT, STREAM_GP, STREAM_FIXED = 1, 3, 4, 5
STREAM_MODEL, STREAM_PL = 6, 7  # a generator's own draws (noise, style mixing); path length
STREAM_SAMPLE_NOISE = 0x5B  # a sample's noise inputs outside training (sample, eval, synth)
NOISE_BLOCK = 256  # samples per block of that stream
STREAM_BATCHES = 0x0DA7A
STREAM_XFLIP = 0xF11B


def rng_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (seed, stream, index, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def generator_for(device: torch.device | str, *keys: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(rng_seed(*keys))


def sample_latents(n: int, nz: int, num_classes: int, g: torch.Generator, device) -> tuple:
    """Gaussian latents and, for conditional models, uniformly drawn class labels."""
    z = torch.randn(n, nz, generator=g, device=device)
    y = torch.randint(num_classes, (n,), generator=g, device=device) if num_classes else None
    return z, y


class RowRandom:
    """Draws for the global batch, sliced to this worker's `rows`: what a generator with random
    inputs of its own (StyleGAN2's noise and style mixing) is handed, so that its draws too are a
    function of (seed, stream, index) and the same for any number of workers."""

    def __init__(self, g: torch.Generator, rows: slice, total: int):
        self.g, self.rows, self.total = g, rows, total

    def normal(self, *shape: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """(this worker's rows, *shape) standard normal."""
        return torch.randn(self.total, *shape, generator=self.g, device=device or self.g.device, dtype=dtype)[self.rows]

    def uniform(self) -> float:
        """One number for the whole batch."""
        return float(torch.rand((), generator=self.g, device=self.g.device))

    def randint(self, low: int, high: int) -> int:
        """One integer in [low, high) for the whole batch."""
        return int(torch.randint(low, high, (), generator=self.g, device=self.g.device))


class SampleNoise:
    """Noise inputs for samples outside training (evaluation, `sample`, `synth`): samples
    `start..start+count` of a numbered set, drawn in fixed blocks of NOISE_BLOCK samples on G's
    device, so a sample's noise depends on (seed, its number, the draw's place in G) and not on
    how the set is batched or split across workers. Only `normal`: no style mixing, as the
    reference's metrics (random noise per sample, no mixing)."""

    def __init__(self, seed: int, start: int, count: int):
        self.seed, self.start, self.count, self.calls = seed, start, count, 0

    def normal(self, *shape: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """(count, *shape) standard normal."""
        self.calls += 1
        first, last = self.start // NOISE_BLOCK, (self.start + self.count - 1) // NOISE_BLOCK
        blocks = [torch.randn(NOISE_BLOCK, *shape, device=device, generator=generator_for(
            device or "cpu", self.seed, STREAM_SAMPLE_NOISE, block, self.calls)) for block in range(first, last + 1)]
        offset = self.start - first * NOISE_BLOCK
        return torch.cat(blocks)[offset:offset + self.count].to(dtype)
