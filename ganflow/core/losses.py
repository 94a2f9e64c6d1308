"""Adversarial losses as functions of D's logits, and the gradient penalties.

Each loss returns a scalar mean over the batch. `d` is what the discriminator minimises,
`g` what the generator minimises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AdversarialLoss:
    relativistic = False  # g() needs D's logits on real data too (the G phase then runs D on reals)

    def d(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g(self, fake_logits: Tensor, real_logits: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError


class Minimax(AdversarialLoss):
    """Goodfellow et al. 2014: D maximises log D(x) + log(1 - D(G(z))); G minimises log(1 - D(G(z)))."""

    def d(self, real_logits, fake_logits):
        # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g(self, fake_logits, real_logits=None):
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(f)) = -softplus(f)


class NonSaturating(Minimax):
    """G maximises log D(G(z)) instead, for strong gradients early on (same paper, section 3)."""

    def g(self, fake_logits, real_logits=None):
        return F.softplus(-fake_logits).mean()


class LeastSquares(AdversarialLoss):
    """LSGAN (Mao et al. 2017) with the 0-1 coding a=0, b=1, c=1."""

    def d(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits**2).mean()

    def g(self, fake_logits, real_logits=None):
        return 0.5 * ((fake_logits - 1) ** 2).mean()


class Wasserstein(AdversarialLoss):
    """WGAN critic loss (Arjovsky et al. 2017); Lipschitz via the gradient penalty (Gulrajani et al. 2017)."""

    def d(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def g(self, fake_logits, real_logits=None):
        return -fake_logits.mean()


class Hinge(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""

    def d(self, real_logits, fake_logits):
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def g(self, fake_logits, real_logits=None):
        return -fake_logits.mean()


class RelativisticPairing(AdversarialLoss):
    """RpGAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024): each real is paired with a fake
    and D judges the difference, softplus(-(D(x_r) - D(x_f))); G the reverse pairing."""

    relativistic = True

    def d(self, real_logits, fake_logits):
        return F.softplus(-(real_logits - fake_logits)).mean()

    def g(self, fake_logits, real_logits=None):
        return F.softplus(-(fake_logits - real_logits)).mean()


@dataclass(frozen=True)
class LossSpec:
    """A loss by name, with the defaults it brings: a WGAN critic needs its gradient penalty and
    several critic steps per generator step."""

    make: Callable[[], AdversarialLoss]
    gp_weight: float = 0.0  # loss.gp_weight when the job leaves it out
    n_critic: int = 1  # loss.n_critic when the job leaves it out
    needs_gp: bool = False  # a zero gradient penalty is refused


LOSSES: Dict[str, LossSpec] = {
    "minimax": LossSpec(Minimax),
    "nonsaturating": LossSpec(NonSaturating),
    "lsgan": LossSpec(LeastSquares),
    "wgan-gp": LossSpec(Wasserstein, gp_weight=10.0, n_critic=5, needs_gp=True),
    "hinge": LossSpec(Hinge),
    "rpgan": LossSpec(RelativisticPairing),
}


def build_loss(name: str) -> AdversarialLoss:
    return LOSSES[name].make()


def _input_grad_sq_norm(D: nn.Module, x: Tensor, y: Optional[Tensor]) -> Tensor:
    """Per-sample ||dD(x)/dx||^2, kept in the graph so the penalty can be backpropagated."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, y).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1)


def gradient_penalty(D: nn.Module, real: Tensor, fake: Tensor, y: Optional[Tensor], eps: Tensor) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)|| - 1)^2] at x_hat = eps * real + (1 - eps) * fake."""
    eps = eps.view(-1, *([1] * (real.dim() - 1)))
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    norm = (_input_grad_sq_norm(D, x_hat, y) + 1e-12).sqrt()
    return ((norm - 1) ** 2).mean()


def zero_centred_penalty(logits: Tensor, inputs: Tensor) -> Tensor:
    """R1 (or R2) from a forward already made: E[||d D / d inputs||^2], `inputs` the images before
    augmentation that required grad when D scored them (so the augmentation is differentiated
    through, as StyleGAN2-ADA and R3GAN do). Not loss-scaled under fp16: a scaled input gradient
    overflows fp16 at once, and an unscaled one only loses what adds nothing to the norm."""
    (grad,) = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1).mean()


def path_lengths(images: Tensor, ws: Tensor, noise: Tensor) -> Tensor:
    """Per-sample ||J_w^T y|| for StyleGAN2's path-length regulariser (Karras et al. 2020, eq. 4):
    y = `noise` / sqrt(H*W) random images, J the Jacobian of the images in the styles `ws`
    (B, num_ws, w_dim); the length is averaged over the style inputs, as in the reference."""
    h, w = images.shape[-2:]
    (grad,) = torch.autograd.grad((images * noise / math.sqrt(h * w)).sum(), ws, create_graph=True)
    return grad.square().sum(2).mean(1).sqrt()


def lazy_ratio(every: int) -> float:
    """Regularising every `every` steps, Adam's lr and betas are rescaled by c = every/(every+1)
    (lr*c, beta**c) so the main loss's effective schedule is unchanged (StyleGAN2 appendix B)."""
    return every / (every + 1) if every > 1 else 1.0


@dataclass(frozen=True)
class Regularisers:
    """The loss section's regularisers: WGAN-GP (every D step), R1/R2 on D and path length on G,
    each either every step (N = 1, joined to the main loss) or lazily, every N > 1 steps, as a phase
    of its own scaled by N (StyleGAN2)."""

    gp_weight: float = 0.0
    r1_gamma: float = 0.0
    r2_gamma: float = 0.0
    d_every: int = 1
    pl_weight: float = 0.0
    g_every: int = 1

    @classmethod
    def of(cls, lo) -> "Regularisers":
        """From a resolved LossConfig (`ganflow.job.resolve` fills the model's intervals and weights)."""
        return cls(lo.gp_weight, lo.r1_gamma, lo.r2_gamma, lo.d_reg_every, lo.pl_weight, lo.g_reg_every)

    @property
    def d_lazy(self) -> bool:
        return (self.r1_gamma > 0 or self.r2_gamma > 0) and self.d_every > 1

    @property
    def g_lazy(self) -> bool:
        return self.pl_weight > 0 and self.g_every > 1

    def d_due(self, step: int) -> bool:
        """Whether step `step` (from 0) has a lazy R1/R2 phase."""
        return self.d_lazy and step % self.d_every == 0

    def g_due(self, step: int) -> bool:
        """Whether step `step` (from 0) has a path-length phase."""
        return self.pl_weight > 0 and step % self.g_every == 0

    def lr_scales(self) -> Tuple[float, float]:
        """(G's, D's) optimizer rescaling for the regularisers that run lazily (`lazy_ratio`)."""
        return (lazy_ratio(self.g_every) if self.g_lazy else 1.0, lazy_ratio(self.d_every) if self.d_lazy else 1.0)
