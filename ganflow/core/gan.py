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
import dataclasses
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ganflow.config import JobConfig, TrainConfig
from ganflow.core.augment import AdaptiveP, DiffAugment
from ganflow.core.batch import BatchPlan, share
from ganflow.core.losses import (AdversarialLoss, Regularisers, build_loss, gradient_penalty, path_lengths,
                                 zero_centred_penalty)
from ganflow.core import schedule
from ganflow.core.schedule import ema_beta
from ganflow.core.rng import (STREAM_AUGMENT, STREAM_GP, STREAM_LATENT, STREAM_MODEL,
                              STREAM_PL, RowRandom, generator_for, sample_latents)
from ganflow.core.state import GANState, TrainingState, unwrap

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PL_DECAY, PL_BATCH_SHRINK = 0.01, 2  # StyleGAN2's path-length EMA and its half-size batch


RUNNING_STATS = ("running_mean", "running_var")  # a norm layer's statistics: averaged like the weights


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int, beta: Optional[float] = None) -> None:
    """Parameters follow an EMA with a warm-up, min(decay, (1+t)/(10+t)), or at `beta` (a scheduled
    half-life's per-step decay, which has no warm-up of its own). BatchNorm's running
    statistics follow the same EMA (as BigGAN-PyTorch's): copied from the live G they would
    normalise the averaged weights with the last few steps' activations. Other buffers (StyleGAN2's
    w_avg, a counter) are copied, as StyleGAN2-ADA does."""
    beta = min(decay, (1 + step) / (10 + step)) if beta is None else beta
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - beta)  # one kernel per group
    for (name, b_ema), b in zip(ema.named_buffers(), model.buffers()):
        if name.rsplit(".", 1)[-1] in RUNNING_STATS and b.is_floating_point():
            b_ema.lerp_(b, 1 - beta)
        else:
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
    """The rows one forward-backward computes: the `index`-th of `count` equal slices of the global
    batch (a worker's share, or a part of it under gradient accumulation), and their reals."""

    index: int
    count: int
    real: Tensor
    real_y: Optional[Tensor]

    def rows(self, total: int) -> slice:
        """This part's rows of a batch of `total` (the global batch, or path length's half of it)."""
        return share(total, self.index, self.count)


class Scored(NamedTuple):
    """Images as D scored them: `x` before augmentation (requiring grad when R1/R2 differentiate D
    through the augmentation), `seen` after it, their labels and D's logits."""

    x: Tensor
    seen: Tensor
    y: Optional[Tensor]
    logits: Tensor


def _sync_on_last(model: nn.Module, i: int, n: int):
    """DDP reduces gradients in the backward of the last of `n` parts only (`no_sync` before it)."""
    if i < n - 1 and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _mean(outs: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    if len(outs) == 1:
        return outs[0]
    return {key: torch.stack([o[key] for o in outs]).mean() for key in outs[0]}


def _scaled(loss: Tensor, n: int) -> Tensor:
    """A part's loss as its share of the step's mean over `n` parts."""
    return loss / n if n > 1 else loss


class Augment:
    """DiffAugment as train.augment and train.augment_p set it: a fixed probability, or StyleGAN2-ADA's
    adaptive one (kept in `GANState`), moved by the sign of D's logits on reals."""

    def __init__(self, t: TrainConfig):
        self.diff = DiffAugment(t.augment)
        self.adaptive = AdaptiveP(t.augment_target, t.batch_size) if t.augment_p == "adaptive" else None
        self.fixed_p = None if self.adaptive or t.augment_p == 1.0 else float(t.augment_p)
        self.global_batch = t.batch_size

    def __bool__(self) -> bool:
        return bool(self.diff)

    def __call__(self, x: Tensor, g: Optional[torch.Generator], part: Part, gan: GANState) -> Tensor:
        if not self.diff:
            return x
        p = gan.augment_p if self.adaptive else self.fixed_p
        return self.diff(x, g, (part.rows(self.global_batch).start, self.global_batch), p)

    def adapt(self, gan: GANState, real_logits: Tensor, index: int) -> None:
        """Accumulate sign(D(real)) over the global batch; move p after every `AdaptiveP.interval`-th
        D step (D step `index` counts from 0, so the count of signs is known, never summed)."""
        gan.ada_sum += global_sum(real_logits.sign().sum())
        interval = self.adaptive.interval
        if (index + 1) % interval == 0:
            gan.augment_p = self.adaptive.update(gan.augment_p, gan.ada_sum, interval * self.global_batch)
            gan.ada_sum = 0.0


class GANStep:
    """One training step = `n_critic` D phases + one G phase (+ lazy regularisation) + EMA, of
    worker `rank`'s share of every global batch as `plan` splits it; pure torch."""

    def __init__(self, cfg: JobConfig, device: torch.device, num_classes: int, plan: Optional[BatchPlan] = None,
                 rank: int = 0):
        t = cfg.train
        self.loss: AdversarialLoss = build_loss(cfg.loss.name)
        self.reg = Regularisers.of(cfg.loss)
        self.n_critic = cfg.loss.n_critic
        self.augment = Augment(t)
        self.plan, self.rank = plan or BatchPlan.of(t, 1), rank
        self.seed, self.device, self.num_classes, self.nz = t.seed, device, num_classes, cfg.model.nz
        self.autocast_dtype = AUTOCAST_DTYPES[t.precision]
        self.ema_decay, self.channels_last, self.compile = t.ema_decay, t.channels_last, t.compile
        self.train, self.optim = t, cfg.optim  # what train.schedules start from and drive
        self.model_precision = False  # models that place their own low precision (StyleGAN2) are not autocast
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

    def _rng(self, stream: int, *keys: int) -> torch.Generator:
        return generator_for(self.device, self.seed, stream, *keys)

    def _latents(self, stream: int, index: int, rows: slice, total: int) -> tuple:
        """`rows` of a batch of `total` latents (and labels): 1 worker x B == 2 workers x B/2."""
        z, y = sample_latents(total, self.nz, self.num_classes, self._rng(stream, index), self.device)
        return z[rows], (y[rows] if y is not None else None)

    def _model_inputs(self, G: nn.Module, index: int, draw: int, rows: slice, total: int) -> dict:
        """Keyword inputs of generators that draw randomness of their own (noise, style mixing)."""
        if not getattr(unwrap(G), "random_inputs", False):
            return {}
        return {"rand": RowRandom(self._rng(STREAM_MODEL, index, draw), rows, total)}

    def generate(self, G: nn.Module, index: int, part: Part, keep_graph: bool) -> tuple:
        """The part's fakes of global batch `index`. `keep_graph`: through the (DDP) G with autograd
        on, so the G phase can backpropagate through the very fakes D just saw (one G forward a step)."""
        total = self.plan.global_batch
        rows = part.rows(total)
        z, y = self._latents(STREAM_LATENT, index, rows, total)
        kwargs = self._model_inputs(G, index, 0, rows, total)
        if keep_graph:
            with self._autocast():
                return self._fast(G)(z, y, **kwargs), y
        with torch.no_grad(), self._autocast():
            return self._fast(unwrap(G))(z, y, **kwargs), y

    def parts(self, real: Tensor, real_y: Optional[Tensor]) -> List[Part]:
        """This worker's rows in the plan's parts (one part: its whole share)."""
        ranks = self.plan.part_ranks(self.rank)
        if len(ranks) == 1:
            return [Part(*ranks[0], real, real_y)]
        m = self.plan.part_rows
        return [Part(i, count, real[c * m:(c + 1) * m], real_y[c * m:(c + 1) * m] if real_y is not None else None)
                for c, (i, count) in enumerate(ranks)]

    def _scored(self, D: nn.Module, x: Tensor, y: Optional[Tensor], aug_g, part: Part, gan: GANState,
                grad: bool) -> Scored:
        """D's logits of `x` augmented; `grad`: x requires grad, for R1/R2 from this very forward
        (eager then: a compiled D has no double backward)."""
        x = x.detach().requires_grad_(grad)
        seen = self.augment(x, aug_g, part, gan)
        return Scored(x, seen, y, (D if grad else self._fast(D))(seen, y))

    def _penalties(self, D: nn.Module, real: Optional[Scored], fake: Optional[Scored], part: Part, index: int,
                   gp: float = 0.0, r1: float = 0.0, r2: float = 0.0) -> Tuple[Tensor, Dict[str, Tensor]]:
        """(weighted sum, each value) of WGAN-GP (its own fp32 pass at points between the seen reals
        and fakes), R1 and R2 (from the logits D gave `real` and `fake`, w.r.t. their images before
        augmentation), each only when its weight is > 0."""
        total, values = torch.zeros((), device=self.device), {}
        if gp > 0:
            batch = self.plan.global_batch
            eps = torch.rand(batch, generator=self._rng(STREAM_GP, index), device=self.device)[part.rows(batch)]
            values["penalty/gp"] = gradient_penalty(D, real.seen.float(), fake.seen.float(), real.y, eps)  # x_hat takes the real labels
            total = total + gp * values["penalty/gp"]
        if r1 > 0:
            values["penalty/r1"] = zero_centred_penalty(real.logits, real.x)
            total = total + r1 * values["penalty/r1"]
        if r2 > 0:
            values["penalty/r2"] = zero_centred_penalty(fake.logits, fake.x)
            total = total + r2 * values["penalty/r2"]
        return total, {k: v.detach() for k, v in values.items()}

    def d_phase(self, st: TrainingState, D: nn.Module, parts: List[Part], fakes: List[tuple], index: int,
                want_norms: bool = False) -> Dict[str, Tensor]:
        """One D optimizer step on the parts' reals and fakes (gradients accumulated over the parts,
        reduced across workers once, with the last). R1/R2 every step come from this forward's
        logits, as R3GAN and StyleGAN2-ADA's `Dboth` (no second D pass)."""
        st.opt_d.zero_grad(set_to_none=True)
        n, outs, reals = len(parts), [], []
        every_step = not self.reg.d_lazy  # else R1/R2 wait for d_reg_phase; WGAN-GP is never lazy
        r1, r2 = 0.5 * self.reg.r1_gamma * every_step, 0.5 * self.reg.r2_gamma * every_step
        for i, (part, (fake, fake_y)) in enumerate(zip(parts, fakes)):
            aug_g = self._rng(STREAM_AUGMENT, index, 0) if self.augment else None
            with _sync_on_last(D, i, n):
                with self._autocast():
                    real = self._scored(D, part.real, part.real_y, aug_g, part, st.gan, grad=r1 > 0)
                    faked = self._scored(D, fake, fake_y, aug_g, part, st.gan, grad=r2 > 0)
                    loss = self.loss.d(real.logits.float(), faked.logits.float())
                penalty, values = self._penalties(D, real, faked, part, index, gp=self.reg.gp_weight, r1=r1, r2=r2)
                st.scaler_d.scale(_scaled(loss + penalty, n)).backward()
            outs.append({"loss/d": loss.detach(), "d/real_logit": real.logits.detach().float().mean(),
                         "d/fake_logit": faked.logits.detach().float().mean(), **values})
            reals.append(real.logits.detach().float())
        out = _mean(outs)
        norm = _optimizer_step(st.scaler_d, st.opt_d, unwrap(D), want_norms)
        if norm is not None:
            out["grad_norm/d"] = norm
        if self.augment.adaptive:
            self.augment.adapt(st.gan, torch.cat(reals), index)
        return out

    def d_reg_phase(self, st: TrainingState, D: nn.Module, parts: List[Part], fakes: List[tuple], index: int) -> Dict[str, Tensor]:
        """Lazy R1/R2 (StyleGAN2's Dreg): their own forward (fp32), backward and optimizer step, x the interval."""
        st.opt_d.zero_grad(set_to_none=True)
        n, outs = len(parts), []
        r1, r2 = 0.5 * self.reg.r1_gamma * self.reg.d_every, 0.5 * self.reg.r2_gamma * self.reg.d_every
        for i, (part, (fake, fake_y)) in enumerate(zip(parts, fakes)):
            aug_g = self._rng(STREAM_AUGMENT, index, 2) if self.augment else None
            with _sync_on_last(D, i, n):
                real = self._scored(D, part.real.float(), part.real_y, aug_g, part, st.gan, grad=True) if r1 > 0 else None
                faked = self._scored(D, fake.float(), fake_y, aug_g, part, st.gan, grad=True) if r2 > 0 else None
                total, values = self._penalties(D, real, faked, part, index, r1=r1, r2=r2)
                # D's head gets no penalty gradient; DDP needs every parameter in the graph
                total = total + sum(s.logits.sum() * 0 for s in (real, faked) if s is not None)
                st.scaler_d.scale(_scaled(total, n)).backward()
            outs.append(values)
        _optimizer_step(st.scaler_d, st.opt_d, unwrap(D), False)
        return _mean(outs)

    def g_phase(self, st: TrainingState, G: nn.Module, D: nn.Module, parts: List[Part], fakes: List[Optional[tuple]],
                index: int, want_norms: bool = False) -> Dict[str, Tensor]:
        """One G optimizer step. A part's fake must still carry G's graph (see `generate`), or be None:
        then it is generated here, part by part (gradient accumulation keeps one part's graph at a
        time). D is called unwrapped and frozen; a relativistic loss also scores the part's reals."""
        D_frozen = unwrap(D).requires_grad_(False)
        st.opt_g.zero_grad(set_to_none=True)
        n, losses = len(parts), []
        try:
            for i, (part, made) in enumerate(zip(parts, fakes)):
                aug_g = self._rng(STREAM_AUGMENT, index, 1) if self.augment else None
                with _sync_on_last(G, i, n):
                    fake, y = made if made is not None else self.generate(G, index, part, keep_graph=True)
                    with self._autocast():
                        logits = self._fast(D_frozen)(self.augment(fake, aug_g, part, st.gan), y)
                        real_logits = None
                        if self.loss.relativistic:
                            with torch.no_grad():
                                real_logits = self._fast(D_frozen)(self.augment(part.real, aug_g, part, st.gan),
                                                                   part.real_y).float()
                        loss = self.loss.g(logits.float(), real_logits)
                    st.scaler_g.scale(_scaled(loss, n)).backward()
                losses.append(loss.detach())
        finally:
            D_frozen.requires_grad_(True)
        out = {"loss/g": torch.stack(losses).mean()}
        norm = _optimizer_step(st.scaler_g, st.opt_g, unwrap(G), want_norms)
        if norm is not None:
            out["grad_norm/g"] = norm
        return out

    def _path_lengths(self, G: nn.Module, index: int, part: Part, total: int) -> Tuple[Tensor, Tensor]:
        rows = part.rows(total)
        z, y = self._latents(STREAM_PL, index, rows, total)
        noise = RowRandom(self._rng(STREAM_PL, index, 1), rows, total)
        with self._autocast():
            images, ws = G(z, y, return_ws=True, **self._model_inputs(G, index, 1, rows, total))
        return path_lengths(images.float(), ws, noise.normal(*images.shape[1:], device=images.device)), images

    def g_reg_phase(self, st: TrainingState, G: nn.Module, parts: List[Part], index: int) -> Dict[str, Tensor]:
        """StyleGAN2's path-length regulariser (Greg) on half a batch, x the interval. Its running
        mean follows the global batch's mean length (detached: the reference lets the 1% EMA share
        of the gradient through, which would tie the workers' graphs together). In parts, the
        lengths are measured once for the mean, then again, part by part, for the gradient."""
        total = self.plan.global_batch // PL_BATCH_SHRINK
        n = len(parts)
        st.opt_g.zero_grad(set_to_none=True)
        if n == 1:
            lengths, images = self._path_lengths(G, index, parts[0], total)
            batch_sum = global_sum(lengths.sum())
        else:
            batch_sum = global_sum(sum(self._path_lengths(unwrap(G), index, p, total)[0].detach().sum() for p in parts))
        mean = st.gan.pl_mean
        mean = mean + PL_DECAY * (batch_sum / total - mean)
        st.gan.pl_mean = mean
        penalties = []
        for i, part in enumerate(parts):
            with _sync_on_last(G, i, n):
                if n > 1:
                    lengths, images = self._path_lengths(G, index, part, total)
                penalty = (lengths - mean).square().mean()
                # images[:, 0, 0, 0] * 0 keeps every parameter in the graph (toRGB biases get no path-length gradient), as DDP needs
                loss = (images[:, 0, 0, 0] * 0).sum() + penalty * self.reg.pl_weight * self.reg.g_every
                st.scaler_g.scale(_scaled(loss, n)).backward()
            penalties.append(penalty.detach())
        _optimizer_step(st.scaler_g, st.opt_g, unwrap(G), False)
        return {"penalty/pl": torch.stack(penalties).mean(), "penalty/pl_mean": torch.tensor(mean)}

    def step(self, st: TrainingState, G: nn.Module, D: nn.Module, batches, want_norms: bool = False) -> Dict[str, Tensor]:
        """`batches`: callable batch_index -> (real, labels) for this worker. Advances `st.step` by one."""
        now = self._schedule(st)
        out: Dict[str, Tensor] = {}
        whole = self.plan.parts == 1  # else the G phase makes its fakes part by part
        for c in range(self.n_critic):
            index = st.step * self.n_critic + c
            last = c == self.n_critic - 1
            real, real_y = batches(index)
            if self.channels_last and real.dim() == 4:
                real = real.contiguous(memory_format=torch.channels_last)
            parts = self.parts(real, real_y)
            fakes = [self.generate(G, index, p, keep_graph=last and whole) for p in parts]
            out = self.d_phase(st, D, parts, fakes, index, want_norms and last)
            if last and self.reg.d_due(st.step):
                out.update(self.d_reg_phase(st, D, parts, fakes, index))
        out.update(self.g_phase(st, G, D, parts, fakes if whole else [None] * len(parts), index, want_norms))
        if self.reg.g_due(st.step):  # the parts' rows, of its half-size batch
            out.update(self.g_reg_phase(st, G, parts, index))
        if self.augment.adaptive:
            out["augment/p"] = torch.tensor(st.gan.augment_p)
        if st.G_ema is not None:
            beta = ema_beta(now["ema_half_life_kimg"], self.train.batch_size) if "ema_half_life_kimg" in now else None
            ema_update(st.G_ema, unwrap(G), self.ema_decay, st.step, beta)
        out.update({f"schedule/{name}": torch.tensor(v) for name, v in now.items()})
        st.step += 1
        return out

    def _schedule(self, st: TrainingState) -> Dict[str, float]:
        """Set this step's scheduled values (`train.schedules`) where they act: the optimizers' lr and
        betas (lazy regularisation's rescaling kept), the penalties' gamma, augmentation's p."""
        now = schedule.at(self.train, st.step)
        if {"lr", "beta1", "beta2"} & now.keys():
            for opt, base, c in ((st.opt_g, self.optim.g, st.lr_scale[0]), (st.opt_d, self.optim.d, st.lr_scale[1])):
                lr, b1, b2 = now.get("lr", base.lr), now.get("beta1", base.betas[0]), now.get("beta2", base.betas[1])
                for group in opt.param_groups:
                    group["lr"] = lr * c
                    if "betas" in group:
                        group["betas"] = (b1 ** c, b2 ** c)
        gammas = {k: now[k] for k in ("r1_gamma", "r2_gamma") if k in now}
        if gammas:
            self.reg = dataclasses.replace(self.reg, **gammas)
        if "augment_p" in now:
            self.augment.fixed_p = now["augment_p"]
        return now
