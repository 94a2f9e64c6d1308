"""The GAN step in pure torch: n_critic D phases, one G phase, generator EMA.

No Ray here. `G` and `D` may be DDP-wrapped; each phase is one clean forward-backward of the model
it updates. The other model is called unwrapped (and frozen, for D in the G phase), so DDP never
sees a forward whose gradients it will not reduce.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ganflow.config import JobConfig
from ganflow.core.augment import DiffAugment
from ganflow.core.losses import AdversarialLoss, build_loss, gradient_penalty, r1_penalty
from ganflow.core.rng import STREAM_AUGMENT, STREAM_FIXED, STREAM_GP, STREAM_LATENT, generator_for, sample_latents
from ganflow.core.state import TrainingState, unwrap

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Parameters follow an EMA with a warm-up, min(decay, (1+t)/(10+t)); buffers (BN stats) are copied."""
    beta = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - beta)  # one kernel per group
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _grad_norm(params) -> Tensor:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    return torch.cat(grads).norm() if grads else torch.zeros(())


def _optimizer_step(scaler: torch.amp.GradScaler, opt: torch.optim.Optimizer, model: nn.Module, want_norm: bool) -> Optional[Tensor]:
    """Step through the grad scaler (a no-op one in fp32/bf16); the unscaled gradient norm if asked."""
    norm = None
    if want_norm:
        scaler.unscale_(opt)
        norm = _grad_norm(model.parameters())
    scaler.step(opt)
    scaler.update()
    return norm


class GANStep:
    """One training step = `n_critic` D phases + one G phase + EMA; pure torch."""

    def __init__(self, cfg: JobConfig, device: torch.device, num_classes: int, nz: int):
        self.loss: AdversarialLoss = build_loss(cfg.loss.name)
        self.gp_weight, self.r1_gamma = cfg.loss.gp_weight, cfg.loss.r1_gamma
        self.n_critic = cfg.loss.n_critic
        self.augment = DiffAugment(cfg.train.augment)
        self.autocast_dtype = AUTOCAST_DTYPES[cfg.train.precision]
        self.ema_decay = cfg.train.ema_decay
        self.seed, self.device, self.num_classes, self.nz = cfg.train.seed, device, num_classes, nz
        self.global_batch = cfg.train.batch_size

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _latents(self, stream: int, index: int, rank: int, world: int) -> tuple:
        """This rank's slice of the global batch's latents: 1 worker x B == 2 workers x B/2."""
        z, y = sample_latents(self.global_batch, self.nz, self.num_classes, generator_for(self.device, self.seed, stream, index), self.device)
        sl = self._rank_slice(rank, world)
        return z[sl], (y[sl] if y is not None else None)

    def _rank_slice(self, rank: int, world: int) -> slice:
        n = self.global_batch // world
        return slice(rank * n, (rank + 1) * n)

    def _rank_rows(self, rank: int, world: int) -> tuple:
        """The rank slice as DiffAugment takes it: (first row, global batch size)."""
        return self._rank_slice(rank, world).start, self.global_batch

    def generate(self, G: nn.Module, index: int, rank: int, world: int, keep_graph: bool) -> tuple:
        """Fakes for global batch `index`. `keep_graph`: through the (DDP) G with autograd on, so
        the G phase can backpropagate through the very fakes D just saw (one G forward a step)."""
        z, y = self._latents(STREAM_LATENT, index, rank, world)
        if keep_graph:
            with self._autocast():
                return G(z, y), y
        with torch.no_grad(), self._autocast():
            return unwrap(G)(z, y), y

    def d_phase(self, st: TrainingState, D: nn.Module, real: Tensor, real_y: Optional[Tensor], fake: Tensor,
                fake_y: Optional[Tensor], index: int, rank: int = 0, world: int = 1, want_norms: bool = False) -> Dict[str, Tensor]:
        aug_g = generator_for(self.device, self.seed, STREAM_AUGMENT, index, 0) if self.augment else None
        rows = self._rank_rows(rank, world)
        fake = fake.detach()
        st.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            real_in = self.augment(real, aug_g, rows) if self.augment else real
            fake_in = self.augment(fake, aug_g, rows) if self.augment else fake
            real_logits = D(real_in, real_y)
            fake_logits = D(fake_in, fake_y)
            loss = self.loss.d(real_logits.float(), fake_logits.float())
        total = loss
        out = {"loss/d": loss.detach(), "d/real_logit": real_logits.detach().float().mean(), "d/fake_logit": fake_logits.detach().float().mean()}
        # Penalties run in fp32: their double backward is where low precision hurts most.
        if self.gp_weight > 0:
            eps = torch.rand(self.global_batch, generator=generator_for(self.device, self.seed, STREAM_GP, index), device=self.device)
            eps = eps[self._rank_slice(rank, world)]
            gp = gradient_penalty(D, real_in.float(), fake_in.float(), real_y, eps)  # x_hat takes the real labels
            total = total + self.gp_weight * gp
            out["penalty/gp"] = gp.detach()
        if self.r1_gamma > 0:
            r1 = r1_penalty(D, real_in.float(), real_y)
            total = total + 0.5 * self.r1_gamma * r1
            out["penalty/r1"] = r1.detach()
        st.scaler_d.scale(total).backward()
        norm = _optimizer_step(st.scaler_d, st.opt_d, unwrap(D), want_norms)
        if norm is not None:
            out["grad_norm/d"] = norm
        return out

    def g_phase(self, st: TrainingState, G: nn.Module, D: nn.Module, fake: Tensor, y: Optional[Tensor], index: int,
                rank: int = 0, world: int = 1, want_norms: bool = False) -> Dict[str, Tensor]:
        """`fake` must still carry G's graph (see `generate`); D is called unwrapped and frozen."""
        aug_g = generator_for(self.device, self.seed, STREAM_AUGMENT, index, 1) if self.augment else None
        D_frozen = unwrap(D).requires_grad_(False)
        st.opt_g.zero_grad(set_to_none=True)
        try:
            with self._autocast():
                logits = D_frozen(self.augment(fake, aug_g, self._rank_rows(rank, world)) if self.augment else fake, y)
                loss = self.loss.g(logits.float())
            st.scaler_g.scale(loss).backward()
        finally:
            D_frozen.requires_grad_(True)
        out = {"loss/g": loss.detach()}
        norm = _optimizer_step(st.scaler_g, st.opt_g, unwrap(G), want_norms)
        if norm is not None:
            out["grad_norm/g"] = norm
        return out

    def step(self, st: TrainingState, G: nn.Module, D: nn.Module, batches, rank: int = 0, world: int = 1,
             want_norms: bool = False) -> Dict[str, Tensor]:
        """`batches`: callable batch_index -> (real, labels) for this rank. Advances `st.step` by one."""
        out: Dict[str, Tensor] = {}
        for k in range(self.n_critic):
            index = st.step * self.n_critic + k
            last = k == self.n_critic - 1
            real, real_y = batches(index)
            fake, fake_y = self.generate(G, index, rank, world, keep_graph=last)
            out = self.d_phase(st, D, real, real_y, fake, fake_y, index, rank, world, want_norms and last)
        out.update(self.g_phase(st, G, D, fake, fake_y, index, rank, world, want_norms))
        if st.G_ema is not None:
            ema_update(st.G_ema, unwrap(G), self.ema_decay, st.step)
        st.step += 1
        return out

    def fixed_latents(self, n: int) -> tuple:
        """The latent batch behind every sample grid of a run (labels cycle through the classes)."""
        z, _ = sample_latents(n, self.nz, 0, generator_for(torch.device("cpu"), self.seed, STREAM_FIXED, 0), "cpu")
        y = torch.arange(n) % self.num_classes if self.num_classes else None
        return z.to(self.device), (y.to(self.device) if y is not None else None)
