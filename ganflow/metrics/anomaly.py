"""Anomaly scores of images under a trained GAN (higher: less like its data), pure torch.

Two methods, registered by name:
- `disc`: minus the discriminator's logit (for a class-conditional D, of its most likely class).
  One forward pass; it only knows what D learnt to separate from G's samples.
- `recon`: latent-search reconstruction (AnoGAN, Schlegl et al. 2017): optimise z so G(z) matches
  the image, then score (1 - w) * mean|x - G(z)| + w * mean|f_D(x) - f_D(G(z))|, f_D being D's
  last feature map. A class-conditional G searches in the class D finds most likely.

A batch's latents depend only on (seed, its first image's index), so scores do not depend on
how the images are split across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ganflow.core.rng import rng_seed


@dataclass
class ScoreSettings:
    steps: int = 200  # recon: latent-search iterations
    lr: float = 0.05  # recon: Adam step size on z
    feature_weight: float = 0.1  # recon: w, the weight of the discriminator-feature distance
    seed: int = 0


def _best_class(D: torch.nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The class a conditional D scores highest for each image (None for an unconditional D)."""
    classes = D.num_classes
    if not classes:
        return None
    logits = torch.stack([D(x, torch.full((len(x),), k, dtype=torch.long, device=x.device)) for k in range(classes)], 1)
    return logits.argmax(1)


@torch.no_grad()
def disc_scores(G, D, x: torch.Tensor, start: int, s: ScoreSettings) -> Dict[str, torch.Tensor]:
    return {"score": -D(x, _best_class(D, x))}


def recon_scores(G, D, x: torch.Tensor, start: int, s: ScoreSettings) -> Dict[str, torch.Tensor]:
    with torch.no_grad():
        y = _best_class(D, x)
        target = D.features(x)
    g = torch.Generator().manual_seed(rng_seed(s.seed, 0x5C, start))
    z = torch.randn(len(x), G.nz, generator=g).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=s.lr)
    for p in list(G.parameters()) + list(D.parameters()):
        p.requires_grad_(False)

    def per_image(z):
        fake = G(z, y)
        residual = (x - fake).abs().flatten(1).mean(1)
        feature = (target - D.features(fake)).abs().flatten(1).mean(1)
        return residual, feature

    for _ in range(s.steps):
        residual, feature = per_image(z)
        # a sum, not a mean: each image's z gets its own gradient whatever the batch size
        loss = ((1 - s.feature_weight) * residual + s.feature_weight * feature).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        residual, feature = per_image(z)
    return {"score": (1 - s.feature_weight) * residual + s.feature_weight * feature,
            "residual": residual, "feature_distance": feature}


METHODS: Dict[str, Callable[..., Dict[str, torch.Tensor]]] = {"disc": disc_scores, "recon": recon_scores}



def auroc(rows: List[Dict], normal: List[str]) -> Optional[float]:
    """Area under the ROC curve for telling the images whose label is not one of the run's classes
    (the anomalies) from those whose label is; None unless the data holds both kinds."""
    if not normal or any(r["label"] == "" for r in rows):
        return None
    anomalous = [r["label"] not in normal for r in rows]
    if all(anomalous) or not any(anomalous):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(anomalous, [r["score"] for r in rows]))


def mean_by_label(rows: List[Dict]) -> Dict[str, float]:
    groups: Dict[str, List[float]] = {}
    for r in rows:
        groups.setdefault(r["label"] or "all", []).append(r["score"])
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}
