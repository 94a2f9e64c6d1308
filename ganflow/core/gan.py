"""The GAN step in pure torch: n_critic D phases, one G phase, the lazy regularisation phases,
generator EMA.

No Ray here. `G` and `D` may be DDP-wrapped; each phase is one clean forward-backward of the model
it updates. The other model is called unwrapped (and frozen, for D in the G phase), so DDP never
sees a forward whose gradients it will not reduce.

Regularisers every step (`loss.d_reg_every` = 1) join the main D loss, as in R3GAN; lazily (every
N > 1 steps) they are a phase of their own with its own optimizer step, scaled by N, as in
StyleGAN2 (the optimizers' rates are rescaled for it in `TrainingState.create`).
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ganflow.config import JobConfig
from ganflow.core.augment import AdaptiveP, DiffAugment
from ganflow.core.losses import AdversarialLoss, build_loss, gradient_penalty, path_lengths, r1_penalty, r2_penalty
from ganflow.core.rng import (STREAM_AUGMENT, STREAM_FIXED, STREAM_GP, STREAM_LATENT, STREAM_MODEL,
                              STREAM_PL, RowRandom, generator_for, sample_latents)
from ganflow.core.state import TrainingState, unwrap

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PL_DECAY, PL_BATCH_SHRINK = 0.01, 2  # StyleGAN2's path-length EMA and its half-size batch


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


def global_sum(value: Tensor) -> float:
    """A per-worker sum summed over every worker (all-reduce when torch.distributed runs)."""
    t = value.detach().double()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return float(t)


class Part(NamedTuple):
    """A slice of the global batch one forward-backward computes: its rows as the `rank`-th of
    `world` equal slices, and their reals."""

    rank: int
    world: int
    real: Tensor
    real_y: Optional[Tensor]


def _sync_on_last(model: nn.Module, i: int, k: int):
    """DDP reduces gradients in the backward of the last of `k` parts only (`no_sync` before it)."""
    if i < k - 1 and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _mean(outs: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    if len(outs) == 1:
        return outs[0]
    return {key: torch.stack([o[key] for o in outs]).mean() for key in outs[0]}


class GANStep:
    """One training step = `n_critic` D phases + one G phase (+ lazy regularisation) + EMA; pure torch."""

    def __init__(self, cfg: JobConfig, device: torch.device, num_classes: int, nz: int):
        lo, t = cfg.loss, cfg.train
        self.loss: AdversarialLoss = build_loss(lo.name)
        self.gp_weight, self.r1_gamma, self.r2_gamma = lo.gp_weight, lo.r1_gamma, lo.r2_gamma
        self.d_reg_every, self.g_reg_every = lo.d_reg_every or 1, lo.g_reg_every or 1
        self.pl_weight = lo.pl_weight or 0.0
        self.n_critic = lo.n_critic
        self.augment = DiffAugment(t.augment)
        self.adaptive = AdaptiveP(t.augment_target, t.batch_size) if t.augment_p == "adaptive" else None
        self.fixed_p = None if self.adaptive or t.augment_p == 1.0 else float(t.augment_p)
        self.autocast_dtype = AUTOCAST_DTYPES[t.precision]
        self.ema_decay = t.ema_decay
        self.seed, self.device, self.num_classes, self.nz = t.seed, device, num_classes, nz
        self.global_batch = t.batch_size
        self.batch_per_worker = t.batch_per_worker
        self.model_precision = False  # models that place their own low precision (StyleGAN2) are not autocast
        self.channels_last = t.channels_last
        self.compile = t.compile
        self._compiled: Dict[int, nn.Module] = {}

    def prepare(self, G: nn.Module, D: nn.Module) -> None:
        """Hand train.precision to models that cast their own blocks (StyleGAN2's highest resolutions);
        with train.compile, compile G's and D's forward passes (wrapped and unwrapped: each phase
        calls the one it needs). Penalties and path lengths differentiate twice: they call the eager
        models, as torch.compile has no double backward."""
        for model in (unwrap(G), unwrap(D)):
            if hasattr(model, "set_precision"):
                model.set_precision(self.autocast_dtype)
                self.model_precision = True
        if self.compile:
            for model in (G, D, unwrap(G), unwrap(D)):
                self._compiled.setdefault(id(model), torch.compile(model))

    def _fast(self, model: nn.Module) -> nn.Module:
        """`model`'s compiled forward under train.compile, else `model`."""
        return self._compiled.get(id(model), model)

    def _autocast(self):
        if self.autocast_dtype is None or self.model_precision:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _latents(self, stream: int, index: int, rank: int, world: int, total: Optional[int] = None) -> tuple:
        """This rank's slice of the global batch's latents: 1 worker x B == 2 workers x B/2."""
        total = total or self.global_batch
        z, y = sample_latents(total, self.nz, self.num_classes, generator_for(self.device, self.seed, stream, index), self.device)
        sl = self._rank_slice(rank, world, total)
        return z[sl], (y[sl] if y is not None else None)

    def _rank_slice(self, rank: int, world: int, total: Optional[int] = None) -> slice:
        n = (total or self.global_batch) // world
        return slice(rank * n, (rank + 1) * n)

    def _rank_rows(self, rank: int, world: int) -> tuple:
        """The rank slice as DiffAugment takes it: (first row, global batch size)."""
        return self._rank_slice(rank, world).start, self.global_batch

    def _model_inputs(self, G: nn.Module, index: int, part: int, rank: int, world: int, total: Optional[int] = None) -> dict:
        """Keyword inputs of generators that draw randomness of their own (noise, style mixing)."""
        if not getattr(unwrap(G), "random_inputs", False):
            return {}
        total = total or self.global_batch
        g = generator_for(self.device, self.seed, STREAM_MODEL, index, part)
        return {"rand": RowRandom(g, self._rank_slice(rank, world, total), total)}

    def _augment(self, st: TrainingState, x: Tensor, g: Optional[torch.Generator], rank: int, world: int) -> Tensor:
        if not self.augment:
            return x
        p = st.gan.get("augment_p", 0.0) if self.adaptive else self.fixed_p
        return self.augment(x, g, self._rank_rows(rank, world), p)

    def generate(self, G: nn.Module, index: int, rank: int, world: int, keep_graph: bool) -> tuple:
        """Fakes for global batch `index`. `keep_graph`: through the (DDP) G with autograd on, so
        the G phase can backpropagate through the very fakes D just saw (one G forward a step)."""
        z, y = self._latents(STREAM_LATENT, index, rank, world)
        kwargs = self._model_inputs(G, index, 0, rank, world)
        if keep_graph:
            with self._autocast():
                return self._fast(G)(z, y, **kwargs), y
        with torch.no_grad(), self._autocast():
            return self._fast(unwrap(G))(z, y, **kwargs), y

    def _penalties(self, D: nn.Module, real_in: Tensor, real_y, fake_in: Tensor, fake_y, index: int, rank: int,
                   world: int, out: Dict[str, Tensor], gp: float = 0.0, r1: float = 0.0, r2: float = 0.0,
                   logits: Optional[list] = None) -> Tensor:
        """WGAN-GP, R1 and R2 with these weights (each only when > 0; R1/R2 as gamma/2 x the lazy
        interval), in fp32: their double backward is where low precision hurts most."""
        total = torch.zeros((), device=real_in.device)
        if gp > 0:
            eps = torch.rand(self.global_batch, generator=generator_for(self.device, self.seed, STREAM_GP, index), device=self.device)
            eps = eps[self._rank_slice(rank, world)]
            value = gradient_penalty(D, real_in.float(), fake_in.float(), real_y, eps)  # x_hat takes the real labels
            total = total + gp * value
            out["penalty/gp"] = value.detach()
        if r1 > 0:
            value = r1_penalty(D, real_in.float(), real_y, logits)
            total = total + r1 * value
            out["penalty/r1"] = value.detach()
        if r2 > 0:
            value = r2_penalty(D, fake_in.float(), fake_y, logits)
            total = total + r2 * value
            out["penalty/r2"] = value.detach()
        return total

    def parts(self, real: Tensor, real_y: Optional[Tensor], rank: int, world: int) -> List[Part]:
        """This rank's rows as `train.batch_per_worker`-sized parts (one part: the whole share), each
        with the (rank, world) its rows have as a slice of the global batch."""
        k = self.accumulate(world)
        if k == 1:
            return [Part(rank, world, real, real_y)]
        m = real.shape[0] // k
        return [Part(rank * k + c, world * k, real[c * m:(c + 1) * m], real_y[c * m:(c + 1) * m] if real_y is not None else None)
                for c in range(k)]

    def accumulate(self, world: int) -> int:
        """Parts a worker computes its share in (gradient accumulation), from train.batch_per_worker."""
        return (self.global_batch // world) // self.batch_per_worker if self.batch_per_worker else 1

    def _scaled(self, loss: Tensor, k: int) -> Tensor:
        return loss / k if k > 1 else loss

    def d_phase(self, st: TrainingState, D: nn.Module, parts: List[Part], fakes: List[tuple], index: int,
                want_norms: bool = False) -> Dict[str, Tensor]:
        """One D optimizer step on the parts' reals and fakes (gradients accumulated over the parts,
        reduced across workers once, with the last)."""
        st.opt_d.zero_grad(set_to_none=True)
        k, outs, reals = len(parts), [], []
        every_step = self.d_reg_every == 1  # else R1/R2 wait for d_reg_phase; WGAN-GP is never lazy
        for i, (part, (fake, fake_y)) in enumerate(zip(parts, fakes)):
            aug_g = generator_for(self.device, self.seed, STREAM_AUGMENT, index, 0) if self.augment else None
            with _sync_on_last(D, i, k):
                with self._autocast():
                    real_in = self._augment(st, part.real, aug_g, part.rank, part.world)
                    fake_in = self._augment(st, fake.detach(), aug_g, part.rank, part.world)
                    real_logits = self._fast(D)(real_in, part.real_y)
                    fake_logits = self._fast(D)(fake_in, fake_y)
                    loss = self.loss.d(real_logits.float(), fake_logits.float())
                out = {"loss/d": loss.detach(), "d/real_logit": real_logits.detach().float().mean(),
                       "d/fake_logit": fake_logits.detach().float().mean()}
                total = loss + self._penalties(D, real_in, part.real_y, fake_in, fake_y, index, part.rank, part.world, out,
                                               gp=self.gp_weight, r1=0.5 * self.r1_gamma * every_step,
                                               r2=0.5 * self.r2_gamma * every_step)
                st.scaler_d.scale(self._scaled(total, k)).backward()
            outs.append(out)
            reals.append(real_logits.detach().float())
        out = _mean(outs)
        norm = _optimizer_step(st.scaler_d, st.opt_d, unwrap(D), want_norms)
        if norm is not None:
            out["grad_norm/d"] = norm
        if self.adaptive:
            self._adapt(st, torch.cat(reals), index)
        return out

    def _adapt(self, st: TrainingState, real_logits: Tensor, index: int) -> None:
        """Accumulate sign(D(real)) over the global batch; move p after every `AdaptiveP.interval`-th
        D step (D step `index` counts from 0, so the count of signs is known, never summed)."""
        st.gan["ada_sum"] = st.gan.get("ada_sum", 0.0) + global_sum(real_logits.sign().sum())
        interval = self.adaptive.interval
        if (index + 1) % interval == 0:
            st.gan["augment_p"] = self.adaptive.update(st.gan.get("augment_p", 0.0), st.gan["ada_sum"], interval * self.global_batch)
            st.gan["ada_sum"] = 0.0

    def d_reg_phase(self, st: TrainingState, D: nn.Module, parts: List[Part], fakes: List[tuple], index: int) -> Dict[str, Tensor]:
        """Lazy R1/R2 (StyleGAN2's Dreg): their own forward, backward and optimizer step, x the interval."""
        st.opt_d.zero_grad(set_to_none=True)
        k, outs = len(parts), []
        n = self.d_reg_every
        for i, (part, (fake, fake_y)) in enumerate(zip(parts, fakes)):
            aug_g = generator_for(self.device, self.seed, STREAM_AUGMENT, index, 2) if self.augment else None
            out: Dict[str, Tensor] = {}
            with _sync_on_last(D, i, k):
                real_in = self._augment(st, part.real, aug_g, part.rank, part.world)
                fake_in = self._augment(st, fake.detach(), aug_g, part.rank, part.world)
                logits: list = []
                total = self._penalties(D, real_in, part.real_y, fake_in, fake_y, index, part.rank, part.world, out,
                                        r1=0.5 * self.r1_gamma * n, r2=0.5 * self.r2_gamma * n, logits=logits)
                total = total + sum(l.sum() * 0 for l in logits)  # D's head gets no penalty gradient; DDP needs every parameter in the graph
                st.scaler_d.scale(self._scaled(total, k)).backward()
            outs.append(out)
        _optimizer_step(st.scaler_d, st.opt_d, unwrap(D), False)
        return _mean(outs)

    def g_phase(self, st: TrainingState, G: nn.Module, D: nn.Module, parts: List[Part], fakes: List[Optional[tuple]],
                index: int, want_norms: bool = False) -> Dict[str, Tensor]:
        """One G optimizer step. A part's fake must still carry G's graph (see `generate`), or be None:
        then it is generated here, part by part (gradient accumulation keeps one part's graph at a
        time). D is called unwrapped and frozen; a relativistic loss also scores the part's reals."""
        D_frozen = unwrap(D).requires_grad_(False)
        st.opt_g.zero_grad(set_to_none=True)
        k, losses = len(parts), []
        try:
            for i, (part, made) in enumerate(zip(parts, fakes)):
                aug_g = generator_for(self.device, self.seed, STREAM_AUGMENT, index, 1) if self.augment else None
                with _sync_on_last(G, i, k):
                    fake, y = made if made is not None else self.generate(G, index, part.rank, part.world, keep_graph=True)
                    with self._autocast():
                        logits = self._fast(D_frozen)(self._augment(st, fake, aug_g, part.rank, part.world), y)
                        real_logits = None
                        if self.loss.relativistic:
                            with torch.no_grad():
                                real_logits = self._fast(D_frozen)(self._augment(st, part.real, aug_g, part.rank, part.world),
                                                                   part.real_y).float()
                        loss = self.loss.g(logits.float(), real_logits)
                    st.scaler_g.scale(self._scaled(loss, k)).backward()
                losses.append(loss.detach())
        finally:
            D_frozen.requires_grad_(True)
        out = {"loss/g": torch.stack(losses).mean()}
        norm = _optimizer_step(st.scaler_g, st.opt_g, unwrap(G), want_norms)
        if norm is not None:
            out["grad_norm/g"] = norm
        return out

    def _path_lengths(self, G: nn.Module, index: int, rank: int, world: int, total: int) -> Tuple[Tensor, Tensor]:
        z, y = self._latents(STREAM_PL, index, rank, world, total)
        noise = RowRandom(generator_for(self.device, self.seed, STREAM_PL, index, 1), self._rank_slice(rank, world, total), total)
        with self._autocast():
            images, ws = G(z, y, return_ws=True, **self._model_inputs(G, index, 1, rank, world, total))
        return path_lengths(images.float(), ws, noise.normal(*images.shape[1:], device=images.device)), images

    def g_reg_phase(self, st: TrainingState, G: nn.Module, parts: List[Part], index: int) -> Dict[str, Tensor]:
        """StyleGAN2's path-length regulariser (Greg) on half a batch, x the interval. Its running
        mean follows the global batch's mean length (detached: the reference lets the 1% EMA share
        of the gradient through, which would tie the workers' graphs together). In parts, the
        lengths are measured once for the mean, then again, part by part, for the gradient."""
        total = self.global_batch // PL_BATCH_SHRINK
        k = len(parts)
        st.opt_g.zero_grad(set_to_none=True)
        if k == 1:
            lengths, images = self._path_lengths(G, index, parts[0].rank, parts[0].world, total)
            batch_sum = global_sum(lengths.sum())
        else:
            batch_sum = global_sum(sum(self._path_lengths(unwrap(G), index, p.rank, p.world, total)[0].detach().sum() for p in parts))
        mean = st.gan.get("pl_mean", 0.0)
        mean = mean + PL_DECAY * (batch_sum / total - mean)
        st.gan["pl_mean"] = mean
        penalties = []
        for i, part in enumerate(parts):
            with _sync_on_last(G, i, k):
                if k > 1:
                    lengths, images = self._path_lengths(G, index, part.rank, part.world, total)
                penalty = (lengths - mean).square().mean()
                # images[:, 0, 0, 0] * 0 keeps every parameter in the graph (toRGB biases get no path-length gradient), as DDP needs
                loss = (images[:, 0, 0, 0] * 0).sum() + penalty * self.pl_weight * self.g_reg_every
                st.scaler_g.scale(self._scaled(loss, k)).backward()
            penalties.append(penalty.detach())
        _optimizer_step(st.scaler_g, st.opt_g, unwrap(G), False)
        return {"penalty/pl": torch.stack(penalties).mean(), "penalty/pl_mean": torch.tensor(mean)}

    def step(self, st: TrainingState, G: nn.Module, D: nn.Module, batches, rank: int = 0, world: int = 1,
             want_norms: bool = False) -> Dict[str, Tensor]:
        """`batches`: callable batch_index -> (real, labels) for this rank. Advances `st.step` by one."""
        out: Dict[str, Tensor] = {}
        d_reg_now = self.d_reg_every > 1 and st.step % self.d_reg_every == 0 and (self.r1_gamma > 0 or self.r2_gamma > 0)
        whole = self.accumulate(world) == 1  # else the G phase makes its fakes part by part
        for k in range(self.n_critic):
            index = st.step * self.n_critic + k
            last = k == self.n_critic - 1
            real, real_y = batches(index)
            if self.channels_last and real.dim() == 4:
                real = real.contiguous(memory_format=torch.channels_last)
            parts = self.parts(real, real_y, rank, world)
            fakes = [self.generate(G, index, p.rank, p.world, keep_graph=last and whole) for p in parts]
            out = self.d_phase(st, D, parts, fakes, index, want_norms and last)
            if d_reg_now and last:
                out.update(self.d_reg_phase(st, D, parts, fakes, index))
        out.update(self.g_phase(st, G, D, parts, fakes if whole else [None] * len(parts), index, want_norms))
        if self.pl_weight > 0 and st.step % self.g_reg_every == 0:  # the parts' rows, of its half-size batch
            out.update(self.g_reg_phase(st, G, parts, index))
        if self.adaptive:
            out["augment/p"] = torch.tensor(st.gan.get("augment_p", 0.0))
        if st.G_ema is not None:
            ema_update(st.G_ema, unwrap(G), self.ema_decay, st.step)
        st.step += 1
        return out

    def fixed_latents(self, n: int) -> tuple:
        """The latent batch behind every sample grid of a run (labels cycle through the classes)."""
        z, _ = sample_latents(n, self.nz, 0, generator_for(torch.device("cpu"), self.seed, STREAM_FIXED, 0), "cpu")
        y = torch.arange(n) % self.num_classes if self.num_classes else None
        return z.to(self.device), (y.to(self.device) if y is not None else None)
