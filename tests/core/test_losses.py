"""Each loss and penalty against values worked out by hand; the EMA update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganflow.core.augment import AdaptiveP
from ganflow.core.gan import GANStep, ema_update
from ganflow.core.losses import build_loss, gradient_penalty, lazy_ratio, path_lengths, zero_centred_penalty
from ganflow.core.state import TrainingState
from ganflow.job import load_job

R = torch.tensor([2.0, -1.0])  # real logits
F_ = torch.tensor([0.5, -3.0])  # fake logits


def sp(x: float) -> float:  # softplus
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "name,d_expected,g_expected",
    [
        ("minimax", (sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2, -(sp(0.5) + sp(-3)) / 2),
        ("nonsaturating", (sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2, (sp(-0.5) + sp(3)) / 2),
        ("lsgan", 0.5 * ((1 + 4) / 2) + 0.5 * ((0.25 + 9) / 2), 0.5 * ((0.25 + 16) / 2)),
        ("wgan-gp", (0.5 - 3) / 2 - (2 - 1) / 2, -(0.5 - 3) / 2),
        ("hinge", (0 + 2) / 2 + (1.5 + 0) / 2, -(0.5 - 3) / 2),
        # RpGAN pairs real i with fake i: D on r - f = (1.5, 2), G on f - r = (-1.5, -2)
        ("rpgan", (sp(-1.5) + sp(-2)) / 2, (sp(1.5) + sp(2)) / 2),
    ],
)
def test_loss_matches_hand_computed_value(name, d_expected, g_expected):
    loss = build_loss(name)
    assert loss.d(R, F_).item() == pytest.approx(d_expected, rel=1e-6)
    assert loss.g(F_, R if loss.relativistic else None).item() == pytest.approx(g_expected, rel=1e-6)


class Linear(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x, y=None):
        return x @ self.w


def test_gradient_penalty_is_norm_minus_one_squared():
    D = Linear([3.0, 4.0])  # ||w|| = 5
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    gp = gradient_penalty(D, real, fake, None, torch.rand(6))
    assert gp.item() == pytest.approx((5 - 1) ** 2, rel=1e-5)
    gp.backward()  # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(D.w.grad, 2 * 4 * torch.tensor([3.0, 4.0]) / 5, rtol=1e-4)


def test_r1_penalty_is_squared_gradient_norm():
    D = Linear([1.0, -2.0])
    x = torch.randn(5, 2, requires_grad=True)
    r1 = zero_centred_penalty(D(x), x)
    assert r1.item() == pytest.approx(5.0, rel=1e-6)
    r1.backward()
    assert torch.allclose(D.w.grad, 2 * torch.tensor([1.0, -2.0]))


class Quadratic(nn.Module):
    """D(x) = ||x||^2 / 2: its input gradient is x itself."""

    def forward(self, x, y=None):
        return 0.5 * x.square().sum(1)


def test_r2_penalty_is_the_squared_gradient_norm_at_the_fakes():
    fake = torch.tensor([[1.0, 2.0], [0.0, -3.0]], requires_grad=True)
    assert zero_centred_penalty(Quadratic()(fake), fake).item() == pytest.approx((5 + 9) / 2)


def test_path_length_is_the_norm_of_the_jacobian_transpose_times_the_scaled_noise():
    M = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.5, 1.0, 0.0, 3.0], [0.0, -2.0, 1.0, 1.0]])  # w (3) -> a 2x2 image
    ws = torch.randn(2, 1, 3, requires_grad=True)  # one style input per sample
    images = (ws[:, 0] @ M).view(2, 1, 2, 2)
    noise = torch.randn(2, 1, 2, 2)
    lengths = path_lengths(images, ws, noise)
    expected = [(M @ (noise[i].flatten() / 2)).norm().item() for i in range(2)]  # J^T y with y / sqrt(H*W), sqrt(4) = 2
    assert lengths.tolist() == pytest.approx(expected, rel=1e-5)


def test_lazy_r1_is_scaled_by_its_interval_and_adam_by_every_over_every_plus_one():
    assert (lazy_ratio(16), lazy_ratio(4), lazy_ratio(1)) == (16 / 17, 4 / 5, 1.0)
    cfg = load_job(None, ["loss.r1_gamma=2", "loss.d_reg_every=4"])
    step = GANStep(cfg, torch.device("cpu"), 0)
    D = Linear([1.0, -2.0])
    opt = torch.optim.SGD(D.parameters(), lr=1.0)
    st = TrainingState(G=nn.Linear(1, 1), D=D, G_ema=None, opt_g=opt, opt_d=opt, scaler_g=torch.amp.GradScaler("cpu", enabled=False),
                       scaler_d=torch.amp.GradScaler("cpu", enabled=False))
    out = step.d_reg_phase(st, D, step.parts(torch.randn(64, 2), None), [(torch.randn(64, 2), None)], 0)
    assert out["penalty/r1"].item() == pytest.approx(5.0)  # ||w||^2
    # gamma/2 x interval x d/dw ||w||^2 = 1 x 4 x 2w, taken in one SGD step of lr 1
    assert D.w.detach().tolist() == pytest.approx((torch.tensor([1.0, -2.0]) * (1 - 8)).tolist())


def test_adaptive_p_moves_by_batch_times_interval_over_500k_images_towards_the_target():
    ada = AdaptiveP(0.6, 64)
    step = 64 * 4 / 500_000
    assert ada.update(0.2, sign_sum=200, count=256) == pytest.approx(0.2 + step)  # r = 0.78 > 0.6: more augmentation
    assert ada.update(0.2, sign_sum=100, count=256) == pytest.approx(0.2 - step)  # r = 0.39: less
    assert ada.update(0.0, sign_sum=-256, count=256) == 0.0  # never below 0


def test_ema_update_averages_weights_and_batchnorm_statistics_alike_and_copies_other_buffers():
    """The EMA G normalises its averaged weights with averaged statistics (the live G's last
    steps' statistics made the quickstart's samples measurably worse: benchmarks/ema_bn.py)."""
    model, ema = nn.Sequential(nn.BatchNorm1d(2)), nn.Sequential(nn.BatchNorm1d(2))
    model.register_buffer("w_avg", torch.full((2,), 5.0))  # StyleGAN2's kind of buffer: copied
    ema.register_buffer("w_avg", torch.zeros(2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        ema[0].weight.fill_(0.0)
        model[0].running_mean.fill_(7.0)
        model[0].running_var.fill_(3.0)
        model[0].num_batches_tracked.fill_(40)
    ema_update(ema, model, decay=0.99, step=1000)  # warm-up is over: beta = 0.99
    assert torch.allclose(ema[0].weight, torch.full((2,), 0.01))
    assert torch.allclose(ema[0].running_mean, torch.full((2,), 0.07))  # 0.99 * 0 + 0.01 * 7
    assert torch.allclose(ema[0].running_var, torch.full((2,), 0.99 + 0.03))  # from 1 (BN's start)
    assert ema[0].num_batches_tracked.item() == 40 and torch.equal(ema.w_avg, model.w_avg)
    ema[0].weight.data.fill_(0.0)
    ema_update(ema, model, decay=0.99, step=0)  # warm-up: beta = 1/10
    assert torch.allclose(ema[0].weight, torch.full((2,), 0.9))
