"""The FID Inception port: equal to torch-fidelity's network on the same weights, weights found in
a cache folder or an s3:// URI and never downloaded, clear errors when they are missing or wrong.

The real weights (95 MB, from GitHub) are out of reach offline, so the network is given random
weights saved in the real file's format: the architecture, resize and input scaling are what is
compared; the weights are the same tensors either way."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from ganflow.metrics.inception import WEIGHT_FILES, FIDInception, InceptionWeightsError, find_weights, load_inception
from tests.conftest import JOBS, run_cli, without_fid_weights


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    """Random FID Inception weights in pytorch-fid's file format (BatchNorm statistics kept sane)."""
    torch.manual_seed(0)
    state = FIDInception().state_dict()
    for key, value in state.items():
        if key.endswith(("running_var", "bn.weight")):
            value.uniform_(0.5, 1.5)
        elif key.endswith(("running_mean", "bn.bias")):
            value.normal_(0, 0.1)
    folder = tmp_path_factory.mktemp("inception-cache")
    torch.save(state, folder / WEIGHT_FILES[0])
    return folder / WEIGHT_FILES[0]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """No weights are found (conftest.without_fid_weights), here and in subprocesses."""
    for var, value in without_fid_weights(tmp_path).items():
        monkeypatch.setenv(var, value)
    monkeypatch.syspath_prepend(str(tmp_path / "shadow"))
    return tmp_path / "ganflow_cache"


def torch_fidelity_inception():
    """torch-fidelity's InceptionV3 module, imported without its package __init__ (which needs
    torchvision); the test command installs torch-fidelity with --no-deps."""
    if "torch_fidelity" not in sys.modules:
        spec = importlib.util.find_spec("torch_fidelity")
        assert spec is not None, "install torch-fidelity: pip install --no-deps torch-fidelity==0.4.0"
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = package
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3


def test_the_port_equals_torch_fidelitys_inception_on_the_same_weights(fake_weights):
    reference = torch_fidelity_inception()("inception-v3-compat", ["2048", "logits_unbiased"],
                                           feature_extractor_weights_path=str(fake_weights))
    ours = load_inception(str(fake_weights))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1  # a GAN's output in [-1, 1]
    as_png = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # what torch-fidelity scores
    with torch.no_grad():
        pool, logits = ours(x)
        ref_pool, ref_logits = reference(as_png)
    assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
    torch.testing.assert_close(pool, ref_pool, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    grey = x[:, :1]  # grey images are repeated to RGB, as torch-fidelity's users must do by hand
    torch.testing.assert_close(ours(grey)[0], reference(as_png[:, :1].repeat(1, 3, 1, 1))[0], rtol=1e-5, atol=1e-6)


def test_weights_are_found_in_the_cache_folder_and_missing_ones_say_where_to_put_them(fake_weights, isolated_cache):
    with pytest.raises(InceptionWeightsError) as err:
        find_weights()
    message = str(err.value)
    assert "\n" not in message and WEIGHT_FILES[0] in message and str(isolated_cache) in message
    assert "eval.inception_weights" in message and "never downloads" in message
    isolated_cache.mkdir(parents=True)
    (isolated_cache / WEIGHT_FILES[0]).write_bytes(fake_weights.read_bytes())
    assert find_weights() == isolated_cache / WEIGHT_FILES[0]


def test_a_file_that_is_not_the_inception_weights_is_refused_in_one_line(tmp_path):
    from ganflow.metrics.digits_classifier import WEIGHTS

    with pytest.raises(InceptionWeightsError, match=r"not the FID Inception weights .* expected pt_inception"):
        load_inception(str(WEIGHTS))
    junk = tmp_path / "pt_inception.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InceptionWeightsError, match="not a readable weights file"):
        load_inception(str(junk))
    with pytest.raises(InceptionWeightsError, match="eval.inception_weights: no file at"):
        find_weights(str(tmp_path / "absent.pth"))


def test_weights_are_read_once_from_an_s3_uri_into_the_cache(fake_weights, isolated_cache, s3):
    import boto3

    from ganflow.store import S3Options

    endpoint, bucket = s3
    boto3.client("s3", endpoint_url=endpoint).upload_file(str(fake_weights), bucket, f"models/{WEIGHT_FILES[0]}")
    uri = f"s3://{bucket}/models/{WEIGHT_FILES[0]}"
    local = find_weights(uri, S3Options(endpoint_url=endpoint))
    assert local.read_bytes() == fake_weights.read_bytes() and str(local).startswith(str(isolated_cache))
    model = load_inception(uri, S3Options(endpoint_url=endpoint))
    assert model(torch.zeros(1, 3, 8, 8))[0].shape == (1, 2048)
    with pytest.raises(InceptionWeightsError, match=f"eval.inception_weights: cannot read s3://{bucket}/models/none.pth"):
        find_weights(f"s3://{bucket}/models/none.pth", S3Options(endpoint_url=endpoint))


def test_fid_kid_is_pr_on_inception_features_with_reference_statistics_cached(fake_weights, tmp_path):
    from ganflow.metrics.scoring import Scorer
    from ganflow.job import load_job, build_training

    cfg = load_job(JOBS / "quickstart.yaml", ["data.resolution=16", "model.ngf=8", "model.ndf=8", "eval.extractor=inception",
                                                 f"eval.inception_weights={fake_weights}", "eval.reference_samples=24",
                                                 f"storage.uri={tmp_path}"])
    _, state = build_training(cfg, torch.device("cpu"))
    scorer = Scorer(cfg, ["fid", "kid", "is", "pr"])
    report = scorer(state.G.eval(), num=24)
    assert set(report) == {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall"}
    assert all(np.isfinite(v) for v in report.values()) and report["fid"] > 0 and report["is"] >= 1
    assert scorer.protocol.startswith("tf-inception-2015-12-05 pool3 (2048)")
    (cached,) = (tmp_path / ".reference").glob("digits-inception-*.safetensors")
    again = Scorer(cfg, ["fid"])(state.G.eval(), num=24)  # a new scorer reads the cached statistics back
    assert again["fid"] == pytest.approx(report["fid"], rel=1e-9)
    with pytest.raises(Exception, match="classes needs eval.extractor=digits"):
        Scorer(cfg, ["classes"])


def test_training_with_inception_eval_and_no_weights_fails_before_anything_is_written(isolated_cache, tmp_path):
    proc = run_cli("train", str(JOBS / "quickstart.yaml"), "eval.extractor=inception", "eval.every=2000",
                   f"storage.uri={tmp_path / 'runs'}", env={"RAY_ADDRESS": None}, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ganflow: error: FID Inception weights not found") and WEIGHT_FILES[0] in line
    assert not (tmp_path / "runs").exists()
