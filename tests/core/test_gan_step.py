"""The pure-torch GAN step: what each phase may touch, determinism, precision paths, DiffAugment."""

from __future__ import annotations

import math

import pytest
import torch

from ganflow.core.augment import DiffAugment
from ganflow.core.fit import StepEnd, fit, process_settings
from ganflow.core.gan import GANStep
from ganflow.core.sampling import draw, fixed_latents
from ganflow.config import with_values
from ganflow.job import batches_for, build_training, load_job

CPU = torch.device("cpu")
SMALL = ["data.resolution=16", "model.nz=16", "model.ngf=8", "model.ndf=8", "train.batch_size=8"]


def setup(*overrides):
    cfg = load_job(None, SMALL + list(overrides))
    ds, st = build_training(cfg, CPU)
    classes = st.G.num_classes  # what the model takes, as training decides it
    step = GANStep(cfg, CPU, classes)
    seen = []

    def batches(i):
        seen.append(i)
        sl = slice(i * 8 % 1000, i * 8 % 1000 + 8)
        return ds.x[sl], (ds.y[sl] if classes else None)

    return cfg, st, step, batches, seen


def test_d_phase_leaves_g_alone_and_g_phase_leaves_d_alone():
    _, st, step, batches, _ = setup()
    g0 = {k: v.clone() for k, v in st.G.named_parameters()}
    d0 = {k: v.clone() for k, v in st.D.named_parameters()}
    parts = step.parts(*batches(0))
    fake, y = step.generate(st.G, 0, parts[0], keep_graph=True)
    step.d_phase(st, st.D, parts, [(fake, y)], index=0)
    assert all(torch.equal(v, dict(st.G.named_parameters())[k]) for k, v in g0.items())
    assert any(not torch.equal(v, dict(st.D.named_parameters())[k]) for k, v in d0.items())
    d1 = {k: v.clone() for k, v in st.D.named_parameters()}
    step.g_phase(st, st.G, st.D, parts, [(fake, y)], index=0)
    assert all(torch.equal(v, dict(st.D.named_parameters())[k]) for k, v in d1.items())
    assert any(not torch.equal(v, dict(st.G.named_parameters())[k]) for k, v in g0.items())
    assert all(p.requires_grad for p in st.D.parameters()), "D is unfrozen after the G phase"


def test_one_generator_forward_per_step():
    _, st, step, batches, _ = setup()
    calls = []
    st.G.register_forward_hook(lambda *a: calls.append(1))
    step.step(st, st.G, st.D, batches)
    assert len(calls) == 1, "the G phase reuses the fakes D saw, as a hand-written DCGAN loop does"


def test_n_critic_consumes_that_many_batches_per_step():
    _, st, step, batches, seen = setup("loss.name=wgan-gp", "loss.n_critic=3")
    step.step(st, st.G, st.D, batches)
    step.step(st, st.G, st.D, batches)
    assert seen == [0, 1, 2, 3, 4, 5] and st.step == 2


class Recorder:
    """`fit`'s hook: what it was told, step by step."""

    def __init__(self):
        self.logged, self.samples, self.checkpoints = [], [], []

    def __call__(self, end: StepEnd):
        if end.log:
            self.logged.append(end.metrics)
        if end.sample:
            self.samples.append(end.step)
        if end.checkpoint:
            self.checkpoints.append(end.step)


def fitted(*overrides, precision=None, state=None):
    """(state, hooks) after core.fit of SMALL + overrides; `state`: go on from it."""
    cfg = load_job(None, SMALL + list(overrides))
    if precision:
        cfg = with_values(cfg, {"train.precision": precision})  # CPU autocast exercises the code path; GPUs are where it pays
    ds, st = build_training(cfg, CPU)
    if state is not None:
        st.load_state_dict(state)
    hooks = Recorder()
    fit(cfg, st, batches_for(cfg, ds), hooks)
    return st, hooks


def test_same_seed_same_losses_different_seed_different_losses():
    runs = []
    for seed in (0, 0, 1):
        _, hooks = fitted(f"train.seed={seed}", "train.augment=color,translation,cutout", "train.steps=2", "train.log_every=1")
        runs.append([m["loss/g"] for m in hooks.logged])
    assert len(runs[0]) == 2 and runs[0] == runs[1] and runs[0] != runs[2]


def test_fit_calls_its_hooks_on_schedule_and_a_stopped_fit_goes_on_to_the_same_weights():
    schedule = ["train.log_every=2", "train.sample_every=3", "train.checkpoint_every=4", "train.augment=translation"]
    straight, hooks = fitted(*schedule, "train.steps=6")
    assert [m["step"] for m in hooks.logged] == [2, 4, 6]
    assert hooks.samples == [3, 6]
    cfg = load_job(None, SMALL)
    fixed = fixed_latents(cfg.train.seed, cfg.model.nz, 0, cfg.train.num_sample_images)
    assert draw(straight.sampler_model, fixed).shape == (64, 1, 16, 16)  # a grid's images: the fixed latent batch
    assert torch.equal(draw(straight.sampler_model, fixed), draw(straight.sampler_model, fixed))
    assert hooks.checkpoints == [4, 6]
    first, _ = fitted(*schedule, "train.steps=4")
    resumed, hooks = fitted(*schedule, "train.steps=6", state=first.state_dict())
    assert [m["step"] for m in hooks.logged] == [6] and hooks.checkpoints == [6]
    for a, b in zip([*straight.G.parameters(), *straight.D.parameters()], [*resumed.G.parameters(), *resumed.D.parameters()]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_step_runs_and_keeps_fp32_weights(precision):
    st, hooks = fitted("loss.r1_gamma=1.0", "train.steps=3", "train.log_every=1", precision=precision)
    out = hooks.logged[-1]
    # (an fp16 gradient may overflow: the scaler then skips that update and lowers its scale)
    assert all(math.isfinite(out[k]) for k in ("loss/d", "loss/g", "penalty/r1"))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in [*st.G.parameters(), *st.D.parameters()])
    assert st.scaler_d.is_enabled() == (precision == "fp16")


def test_diffaugment_is_differentiable_and_shape_preserving():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    y = DiffAugment("color,translation,cutout")(x, g)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    cut = DiffAugment("cutout")(torch.ones(8, 1, 16, 16), torch.Generator().manual_seed(1))
    assert ((cut == 0).flatten(1).sum(1) > 0).all(), "every image loses a patch"


def test_diffaugment_of_a_worker_slice_equals_the_slice_of_the_full_batch_augmentation():
    """What makes 2 workers on half-batches augment exactly like 1 worker on the full batch."""
    x = torch.randn(8, 3, 16, 16)
    aug = DiffAugment("color,translation,cutout")
    full = aug(x, torch.Generator().manual_seed(3))
    halves = [aug(x[r * 4:(r + 1) * 4], torch.Generator().manual_seed(3), rows=(r * 4, 8)) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), full)


def test_compile_channels_last_and_tf32_train_to_the_eager_weights(monkeypatch):
    """The GPU switches on CPU (where torch allows them): compiled G/D forwards, with the R1 penalty's
    double backward through the eager D, channels-last weights and batches, TF32 allowed. Compiled
    through Dynamo and AOTAutograd (where double backward is missing) without Inductor's code
    generation, which costs 20 s on 2 cores and is measured on GPUs (benchmarks/gpu_flags.sh)."""
    common = ["model.g_norm=none", "model.d_norm=none", "loss.r1_gamma=1", "optim.g.name=sgd", "optim.d.name=sgd",
              "train.steps=2", "train.log_every=1"]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _compiled_run_matches_eager(monkeypatch, common)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _compiled_run_matches_eager(monkeypatch, common):
    cfg, st, _, batches, _ = setup(*common)
    fit(cfg, st, batches)
    assert not torch.backends.cuda.matmul.allow_tf32
    fast_cfg, fast, _, _, _ = setup(*common, "train.compile=true", "train.channels_last=true", "train.tf32=true")
    conv = next(p for p in fast.D.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, _real=torch.compile: compiled.append(model) or _real(model, backend="aot_eager"))
    rows = []
    process_settings(fast_cfg.train)  # the training process's, once (the Ray worker calls it before fit)
    assert torch.backends.cuda.matmul.allow_tf32
    fit(fast_cfg, fast, batches, lambda end: end.log and rows.append(end.metrics))
    assert {id(m) for m in compiled} == {id(fast.G), id(fast.D)}, "G's and D's forwards went through torch.compile"
    assert rows[-1]["penalty/r1"] > 0
    for part in ("G", "D"):
        a, b = st.state_dict()[part], fast.state_dict()[part]
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), f"{part}.{k}"


class _LinearD(torch.nn.Module):
    """D(x) = sum(x): its gradient in the images is all ones, so R1 at a 1x16x16 image is 256."""

    num_classes = 0

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, y=None):
        return self.scale * x.flatten(1).sum(1)


@pytest.mark.parametrize("augment", ["", "cutout"])
def test_r1_and_r2_every_step_come_from_the_main_d_forward_and_differentiate_through_the_augmentation(augment):
    """As R3GAN and StyleGAN2-ADA: no second D pass for the penalties (one D forward for the reals,
    one for the fakes), and R1/R2 are taken w.r.t. the images before augmentation, so cut-out
    pixels, which cannot move D, add nothing (at the augmented images they would: 256 a sample)."""
    _, st, step, batches, _ = setup("loss.r1_gamma=1", "loss.r2_gamma=1", "loss.d_reg_every=1", f"train.augment={augment}")
    D, calls = _LinearD(), []
    D.register_forward_hook(lambda *a: calls.append(1))
    parts = step.parts(*batches(0))
    out = step.d_phase(st, D, parts, [step.generate(st.G, 0, parts[0], keep_graph=False)], index=0)
    assert len(calls) == 2
    for key in ("penalty/r1", "penalty/r2"):
        if augment:
            assert 100 < out[key].item() < 256 - 1  # DiffAugment's cutout hides a quarter of each image
        else:
            assert out[key].item() == pytest.approx(256.0)


def test_schedules_ramp_lr_betas_gamma_augment_p_and_ema_half_life_from_start_to_end_then_hold():
    """R3GAN's annealing as config: each value a function of the images seen (step x batch), set
    where it acts before each step, lazy regularisation's Adam rescaling kept."""
    from ganflow.core.schedule import ema_beta

    ramp = "kimg: 0.032, shape: linear"  # over 32 images: the 4 steps of 8
    _, st, step, batches, _ = setup(
        "loss.r1_gamma=1", "loss.d_reg_every=4", "train.augment=translation", "optim.d.betas=[0.0,0.9]",
        "optim.g.betas=[0.0,0.9]", f"train.schedules.lr={{start: 0.004, end: 0.002, {ramp}}}",
        f"train.schedules.beta2={{start: 0.9, end: 0.99, {ramp}}}", f"train.schedules.r1_gamma={{start: 2, end: 1, {ramp}}}",
        "train.schedules.augment_p={start: 0, end: 0.5, kimg: 0.032}",  # cosine
        f"train.schedules.ema_half_life_kimg={{start: 0, end: 0.01, {ramp}}}")
    c = 4 / 5  # D's lazy R1 every 4 steps: lr x c, betas ** c
    seen = []
    for _ in range(6):
        out = step.step(st, st.G, st.D, batches)
        group = st.opt_d.param_groups[0]
        seen.append((group["lr"], group["betas"][1], step.reg.r1_gamma, step.augment.fixed_p, out["schedule/ema_half_life_kimg"].item()))
    for k, (lr, beta2, gamma, p, half_life) in enumerate(seen):
        x = min(k / 4, 1.0)
        assert lr == pytest.approx((0.004 - 0.002 * x) * c) and gamma == pytest.approx(2 - x)
        assert beta2 == pytest.approx((0.9 + 0.09 * x) ** c) and half_life == pytest.approx(0.01 * x)
        assert p == pytest.approx(0.25 * (1 - math.cos(math.pi * x)))
    assert seen[4] == seen[5], "held at the end values after kimg"
    assert st.opt_g.param_groups[0]["lr"] == pytest.approx(0.002)  # G has no lazy phase here
    assert ema_beta(0.0, 8) == 0.0 and ema_beta(0.01, 8) == pytest.approx(0.5 ** (8 / 10))


def test_a_schedule_of_something_the_job_does_not_have_is_one_line_naming_it():
    from ganflow.config import ConfigError

    for overrides, message in [
        (["train.schedules.beta2={start: 0.9, end: 0.99, kimg: 1}", "optim.d.name=sgd"], "needs Adam's betas"),
        (["train.schedules.augment_p={start: 0, end: 0.3, kimg: 1}"], "train.augment with a fixed"),
        (["train.schedules.ema_half_life_kimg={start: 0, end: 1, kimg: 1}", "train.ema_decay=0"], "EMA generator"),
        (["train.schedules.warmup={start: 0, end: 1, kimg: 1}"], "unknown value 'warmup'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_job(None, SMALL + overrides)


def test_a_short_run_of_a_job_that_evaluates_rarely_is_still_scored_at_its_last_step():
    """eval.every larger than train.steps (issue 30, fault 11): evaluated once, at the end, not never."""
    from ganflow.core.fit import step_end

    cfg = load_job(None, ["train.steps=300", "train.checkpoint_every=100", "eval.every=1000"])
    assert [s for s in range(1, 301) if step_end(cfg, s).evaluate] == [300]
    off = load_job(None, ["train.steps=300", "eval.every=0"])
    assert not any(step_end(off, s).evaluate for s in range(1, 301))
