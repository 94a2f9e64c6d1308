"""Quality metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import torch

from ganflow.metrics.fid import feature_stats, frechet_distance
from ganflow.metrics.modes import mode_coverage


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
