"""Quality metrics against values computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganflow.job import load_job
from ganflow.metrics.kernels import feature_stats, frechet_distance, inception_score, kernel_distance, precision_recall
from ganflow.metrics.scoring import METRICS
from ganflow.metrics.modes import mode_coverage
from tests.conftest import JOBS


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + sum(a + b - 2 * np.sqrt(a * b) for a, b in zip(s1, s2))  # = 5 + 1 + 1 + 4
    assert np.isclose(frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)), expected)


def test_frechet_distance_is_zero_for_identical_statistics_and_grows_with_a_mean_shift():
    f = np.random.default_rng(0).normal(size=(2000, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
    mu, sigma = feature_stats(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert np.isclose(frechet_distance(mu, sigma, mu + 0.5, sigma), 8 * 0.25)


def test_mode_coverage_counts_modes_hit_and_the_share_within_three_std():
    centers = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    samples = torch.tensor([[0.01, 0.0], [2.0, 0.05], [2.0, -0.07], [1.0, 1.0]])  # last: between modes
    out = mode_coverage(samples, centers, std=0.02)
    assert out == {"modes": 2, "modes_total": 3, "high_quality": 0.5}


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The textbook formula with scipy's matrix square root (pytorch-fid's way)."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_equals_the_scipy_sqrtm_reference_on_the_same_features():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3000, 32)) @ rng.normal(size=(32, 32))
    b = rng.normal(loc=0.3, size=(3000, 32)) @ rng.normal(size=(32, 32)) * 0.8
    ours = frechet_distance(*feature_stats(a), *feature_stats(b))
    ref = _scipy_frechet(*feature_stats(a), *feature_stats(b))
    assert abs(ours - ref) <= 1e-4 * abs(ref)


def test_kernel_distance_is_unbiased_near_zero_on_one_distribution_and_positive_between_two():
    rng = np.random.default_rng(4)
    same_a, same_b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    shifted = rng.normal(loc=0.5, size=(2000, 16))
    identical = kernel_distance(same_a, same_a, subsets=20, subset_size=500)
    same = kernel_distance(same_a, same_b, subsets=20, subset_size=500)
    apart = kernel_distance(same_a, shifted, subsets=20, subset_size=500)
    assert abs(identical["kid"]) < 0.01 and abs(same["kid"]) < 3 * same["kid_std"] + 1e-3
    assert apart["kid"] > 20 * max(abs(same["kid"]), same["kid_std"])


def test_inception_score_is_the_class_count_for_confident_balanced_predictions_and_one_for_a_single_class():
    k = 10
    confident = np.eye(k)[np.arange(1000) % k]  # each sample certain, classes balanced
    assert np.isclose(inception_score(confident, splits=10)["is"], k, rtol=1e-6)
    one_class = np.tile(np.eye(k)[3], (1000, 1))
    assert np.isclose(inception_score(one_class, splits=10)["is"], 1.0)
    uniform = np.full((1000, k), 1.0 / k)  # unsure about every sample
    assert np.isclose(inception_score(uniform, splits=10)["is"], 1.0)


def test_precision_recall_is_one_for_identical_sets_and_near_zero_for_disjoint_clusters():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(1000, 8))
    assert precision_recall(real, real.copy()) == {"precision": 1.0, "recall": 1.0}
    far = rng.normal(size=(1000, 8)) + 50.0
    out = precision_recall(real, far)
    assert out["precision"] < 0.01 and out["recall"] < 0.01
    # a mode-collapsed generator: real data in two clusters, fakes from one of them
    two = np.concatenate([rng.normal(size=(500, 8)) - 10, rng.normal(size=(500, 8)) + 10])
    one = rng.normal(size=(1000, 8)) + 10
    out = precision_recall(two, one)
    assert out["precision"] > 0.8 and 0.35 < out["recall"] <= 0.5  # precise-ish, recalls one cluster of two


def test_modes_counts_eight_of_eight_on_true_ring_samples_and_three_on_a_collapsed_set():
    from ganflow.config import DataConfig
    from ganflow.data.toy import ring

    data = ring(DataConfig(name="ring", num_points=4000), seed=0)
    assert mode_coverage(data.x, data.centers, data.std)["modes"] == 8
    collapsed = data.x[data.y < 3]
    out = mode_coverage(collapsed, data.centers, data.std)
    assert out["modes"] == 3 and out["high_quality"] > 0.98  # 2D Gaussian within 3 std: 1 - e^-4.5 = 0.989


def test_digits_fid_of_real_digits_is_near_the_floor_and_noise_or_one_class_score_far_worse():
    from ganflow.metrics.digits_classifier import digits_split
    from ganflow.metrics.features import load_extractor

    extractor = load_extractor(load_job(JOBS / "quickstart.yaml"))
    x_tr, y_tr, x_te, y_te = digits_split()
    x = torch.cat([x_tr, x_te])[torch.randperm(1797, generator=torch.Generator().manual_seed(1))]
    reference, real = x[:898], x[898:]
    mu, sigma = feature_stats(extractor.extract(reference)[0].numpy())

    def fid_and_probs(images):
        features, probs = extractor.extract(images)
        return frechet_distance(mu, sigma, *feature_stats(features.numpy())), probs

    floor, real_probs = fid_and_probs(real)
    noise, _ = fid_and_probs(torch.rand(899, 1, 32, 32) * 2 - 1)
    threes = x_tr[y_tr == 3]
    one_class, one_probs = fid_and_probs(threes.repeat(899 // len(threes) + 1, 1, 1, 1)[:899])
    assert noise > 10 * floor and one_class > 5 * floor
    assert inception_score(real_probs)["is"] > 8 and inception_score(one_probs)["is"] < 1.5  # 10 classes vs 1


def _score_in_process_group(rank: int, world: int, store: str, job: str, overrides: list, names: list, out: str) -> None:
    import json as _json

    import torch.distributed as dist

    from ganflow.metrics.scoring import score
    from ganflow.job import load_job, build_training

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    cfg = load_job(job, overrides)
    _, state = build_training(cfg, torch.device("cpu"))  # seeded: the same G in every process
    report = score(state.G.eval(), cfg, names, num=301, rank=rank, world=world)
    if rank == 0:
        Path(out).write_text(_json.dumps(report))
    dist.barrier()  # rank 0 computes after the gather; leave together
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch, each scoring 301 samples
@pytest.mark.parametrize("job,overrides,names", [
    ("quickstart.yaml", ["data.resolution=16", "model.ngf=8", "model.ndf=8"], ["fid", "kid", "is", "pr", "classes"]),
    ("ring.yaml", [], ["modes"]),
])
def test_a_metric_scored_by_two_workers_equals_one_worker_on_the_same_samples(tmp_path, job, overrides, names):
    import json as _json

    import torch.multiprocessing as mp

    from tests.conftest import JOBS

    results = []
    for world in (1, 2):
        out = tmp_path / f"world{world}.json"
        store = tmp_path / f"store{world}"  # a FileStore: no port to race for
        storage = tmp_path / f"runs{world}"  # each world extracts (its shares of) the real data's reference statistics
        mp.spawn(_score_in_process_group, args=(world, str(store), str(JOBS / job), overrides + [f"storage.uri={storage}"],
                                                names, str(out)), nprocs=world)
        results.append(_json.loads(out.read_text()))
    assert results[0] == pytest.approx(results[1], rel=1e-6, abs=1e-9)  # float32 features: batch-size noise only
    assert set(results[0]) >= {v for n in names for v in METRICS[n].rankable}
    if "fid" in names:  # the real data's statistics were cached where the runs live, for the next evaluation
        assert len(list((tmp_path / "runs2" / ".reference").glob("digits-digits-*.safetensors"))) == 1


def test_class_coverage_of_a_run_on_some_digits_counts_only_those_digits():
    from ganflow.metrics.scoring import Scored

    probs = torch.eye(10)[torch.arange(900) % 9]  # digits 0-8 evenly, never a 9
    every = load_job(JOBS / "quickstart.yaml")
    some = load_job(JOBS / "quickstart.yaml", ["data.classes=[0,1,2,3,4,5,6,7,8]"])
    assert METRICS["classes"].compute(Scored(every, probs=probs)) == {"min_class_share": 0.0, "classes_covered_5pct": 9}
    got = METRICS["classes"].compute(Scored(some, probs=probs))
    assert got["classes_covered_5pct"] == 9 and got["min_class_share"] == pytest.approx(1 / 9)
