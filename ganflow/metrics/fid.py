"""Frechet distance between Gaussians fitted to features (Heusel et al. 2017)."""

from __future__ import annotations

import numpy as np


def feature_stats(features: np.ndarray) -> tuple:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr((S1 S2)^1/2) is the sum of the square roots of S1 S2's eigenvalues, which are real and
    non-negative for covariance matrices: no matrix square root (and none of its version drift)."""
    diff = mu1 - mu2
    eig = np.linalg.eigvals(sigma1 @ sigma2)
    tr_covmean = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
