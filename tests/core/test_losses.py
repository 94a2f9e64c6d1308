"""Each loss and penalty against values worked out by hand; the EMA update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganflow.core.gan import ema_update
from ganflow.core.losses import build_loss, gradient_penalty, r1_penalty

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
    ],
)
def test_loss_matches_hand_computed_value(name, d_expected, g_expected):
    loss = build_loss(name)
    assert loss.d(R, F_).item() == pytest.approx(d_expected, rel=1e-6)
    assert loss.g(F_).item() == pytest.approx(g_expected, rel=1e-6)


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
    r1 = r1_penalty(D, torch.randn(5, 2), None)
    assert r1.item() == pytest.approx(5.0, rel=1e-6)
    r1.backward()
    assert torch.allclose(D.w.grad, 2 * torch.tensor([1.0, -2.0]))


def test_ema_update_blends_parameters_and_copies_buffers():
    model, ema = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.weight.fill_(0.0)
        model.running_mean.fill_(7.0)
    ema_update(ema, model, decay=0.99, step=1000)  # warm-up is over: beta = 0.99
    assert torch.allclose(ema.weight, torch.full((2,), 0.01))
    assert torch.equal(ema.running_mean, model.running_mean)
    ema.weight.data.fill_(0.0)
    ema_update(ema, model, decay=0.99, step=0)  # warm-up: beta = 1/10
    assert torch.allclose(ema.weight, torch.full((2,), 0.9))
