"""Feature-level metric kernels: Frechet distance (FID), kernel distance (KID), Inception Score and
improved precision/recall. Each takes features (or class probabilities) already extracted, so the
same code scores Inception, the digits classifier or any other extractor.

Own code rather than torch-fidelity's kernels: torch-fidelity needs torchvision, which does not
install beside the CPU torch wheel this project pins (it pulls a CUDA torch), and torchmetrics
keeps its kernels private behind image-level classes.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch


def feature_stats(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64: what FID compares, and what a reference cache stores."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) (Heusel et al. 2017).

    Tr((S1 S2)^1/2) is the sum of the square roots of S1 S2's eigenvalues, which are real and
    non-negative for covariance matrices: no matrix square root (and none of its version drift)."""
    diff = mu1 - mu2
    eig = np.linalg.eigvals(sigma1 @ sigma2)
    tr_covmean = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def kernel_distance(f1, f2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> Dict[str, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets of both sets; mean and std."""
    x, y = torch.as_tensor(np.asarray(f1), dtype=torch.float64), torch.as_tensor(np.asarray(f2), dtype=torch.float64)
    d = x.shape[1]
    m = min(subset_size, len(x), len(y))
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=g)[:m]]
        b = y[torch.randperm(len(y), generator=g)[:m]]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        off = 1 - torch.eye(m, dtype=torch.float64)
        values.append(((kxx * off).sum() + (kyy * off).sum()) / (m * (m - 1)) - 2 * kxy.mean())
    v = torch.stack(values)
    return {"kid": float(v.mean()), "kid_std": float(v.std()) if len(v) > 1 else 0.0}


def inception_score(probs, splits: int = 10) -> Dict[str, float]:
    """IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over `splits` folds; mean and std."""
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    scores = []
    for part in torch.chunk(p, splits):
        py = part.mean(dim=0, keepdim=True)
        kl = (part * (torch.log(part.clamp_min(1e-12)) - torch.log(py.clamp_min(1e-12)))).sum(dim=1)
        scores.append(torch.exp(kl.mean()))
    s = torch.stack(scores)
    return {"is": float(s.mean()), "is_std": float(s.std()) if len(s) > 1 else 0.0}


def _kth_neighbour_radii(f: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set."""
    radii = []
    for i in range(0, len(f), batch):
        d = torch.cdist(f[i : i + batch], f)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself, at distance 0
    return torch.cat(radii)


def _covered(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    """For each query, whether it lies within some support point's k-NN ball."""
    out = []
    for i in range(0, len(queries), batch):
        out.append((torch.cdist(queries[i : i + batch], support) <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real, fake, k: int = 3, batch: int = 2048) -> Dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the share of fake
    samples inside the real manifold (union of k-NN balls of the real features), recall the share
    of real samples inside the fake manifold."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    r_radii, f_radii = _kth_neighbour_radii(r, k, batch), _kth_neighbour_radii(f, k, batch)
    return {"precision": float(_covered(f, r, r_radii, batch).double().mean()),
            "recall": float(_covered(r, f, f_radii, batch).double().mean())}
