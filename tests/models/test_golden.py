"""Golden checks: ganflow's models compute what the reference code computes, on numbers generated
once from that code (tests/fixtures/golden/: the script that made each fixture and the reference
commit are beside it; no reference code is in this repository). The reference's weights are loaded
through the documented key map (ganflow.models.interop), so a renamed or rewired parameter fails here
too. Tolerance: 1e-5 relative to the largest reference value, fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ganflow.core.losses import path_lengths
from ganflow.models.interop import (r3gan_discriminator_state, r3gan_generator_state, stylegan2_discriminator_state,
                                    stylegan2_generator_state)
from ganflow.models.r3gan import R3GANDiscriminator, R3GANGenerator
from ganflow.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def _part(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def stylegan2():
    t = load_file(str(GOLDEN / "stylegan2.safetensors"))
    G = StyleGAN2Generator(32, 4, 3, 16, num_classes=3, mapping_layers=2, fp16_res=0).eval()
    D = StyleGAN2Discriminator(4, 3, 16, num_classes=3, mbstd_group=4, fp16_res=0).eval()
    G.load_state_dict(stylegan2_generator_state(_part(t, "G.")))
    D.load_state_dict(stylegan2_discriminator_state(_part(t, "D."), 16))
    return G, D, t


def test_stylegan2_generator_images_equal_the_references_at_its_constant_noise(stylegan2):
    G, _, t = stylegan2
    with torch.no_grad():
        close(G(t["in.z"], t["in.y"]), t["out.images"])


def test_stylegan2_discriminator_logits_and_r1_gradient_norms_equal_the_references(stylegan2):
    _, D, t = stylegan2
    with torch.no_grad():
        close(D(t["out.images"], t["in.y"]).flatten(), t["out.d_fake"])
    x = t["in.reals"].clone().requires_grad_(True)
    logits = D(x, t["in.y"])
    close(logits.detach().flatten(), t["out.d_real"])
    (grad,) = torch.autograd.grad(logits.sum(), x)
    close(grad.square().sum([1, 2, 3]), t["out.r1"])


def test_stylegan2_path_lengths_equal_the_references_for_the_same_path_length_noise(stylegan2):
    G, _, t = stylegan2
    images, ws = G(t["in.z"], t["in.y"], return_ws=True)
    close(path_lengths(images, ws, t["in.pl_noise"]).detach(), t["out.pl_lengths"])


@pytest.fixture(scope="module")
def r3gan():
    t = load_file(str(GOLDEN / "r3gan.safetensors"))
    G, D = R3GANGenerator(16, 4, 3, 16, num_classes=3).eval(), R3GANDiscriminator(2, 3, 16, num_classes=3).eval()
    G.load_state_dict(r3gan_generator_state(_part(t, "G.")))
    D.load_state_dict(r3gan_discriminator_state(_part(t, "D.")))
    return G, D, t


def test_r3gan_generator_images_discriminator_logits_and_r1_norms_equal_the_references(r3gan):
    G, D, t = r3gan
    with torch.no_grad():
        close(G(t["in.z"], t["in.y"]), t["out.images"])
    x = t["in.reals"].clone().requires_grad_(True)
    logits = D(x, t["in.y"])
    close(logits.detach().flatten(), t["out.d_real"])
    (grad,) = torch.autograd.grad(logits.sum(), x)
    close(grad.square().sum([1, 2, 3]), t["out.r1"])


def test_r3gan_key_map_covers_the_transitions_1x1_convs_where_the_width_changes():
    """64 px networks (24 channels at 64 px, 48 below): the reference's names and shapes, kept in
    the fixture's metadata, map onto every parameter of ganflow's, none left over."""
    with safe_open(str(GOLDEN / "r3gan.safetensors"), "pt") as f:
        shapes = json.loads(f.metadata()["shapes64"])
    for net, mapped in ((R3GANGenerator(16, 4, 3, 64, num_classes=3), r3gan_generator_state),
                        (R3GANDiscriminator(4, 3, 64, num_classes=3), r3gan_discriminator_state)):
        key = "G" if isinstance(net, R3GANGenerator) else "D"
        ref = {k: torch.zeros(v) for k, v in shapes[key].items()}
        assert any(".conv.weight" in k for k in mapped(ref)), "the width change's transition conv"
        net.load_state_dict(mapped(ref))  # strict: every name and shape
