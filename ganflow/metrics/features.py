"""Feature extractors by name: what FID, KID, precision/recall (features) and the Inception Score
(class probabilities) are computed on. Each names its protocol, reported with every FID, and a
digest of its weights, part of the reference-statistics cache key.

    inception  the standard FID Inception (2048-d pool3, 1008 ImageNet-ish classes); weights from
               eval.inception_weights or a cache folder, never downloaded (see inception.py)
    digits     the small classifier shipped for scikit-learn's digits (64-d, 10 classes): a
               meaningful FID for digits runs on a CPU in seconds
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch

Extract = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]  # images in [-1, 1] -> (features, probs)


@dataclass(frozen=True)
class LoadedExtractor:
    name: str
    protocol: str
    digest: str  # identifies the weights
    dim: int  # feature width; probs follow in the same gathered row
    extract: Extract


def _batched(fn, batch: int) -> Extract:
    @torch.no_grad()
    def run(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        outs = [fn(x[i : i + batch]) for i in range(0, len(x), batch)] or [fn(x[:0])]
        return torch.cat([o[0] for o in outs]).float(), torch.cat([o[1] for o in outs]).float()

    return run


def _digits(eval_cfg, storage, device: torch.device) -> LoadedExtractor:
    from ganflow.metrics.digits_classifier import WEIGHTS, load_digits_classifier

    model = load_digits_classifier().to(device)

    def fn(x):
        f = model.features(x.to(device).float())
        return f, torch.softmax(model.head(f), dim=1)

    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:12]
    return LoadedExtractor("digits", f"ganflow digits classifier {digest} (64-d), grey, bilinear to 32x32",
                           digest, 64, _batched(fn, 500))


def _inception(eval_cfg, storage, device: torch.device) -> LoadedExtractor:
    from ganflow.metrics.inception import PROTOCOL, find_weights, load_inception, weights_digest

    path = find_weights(eval_cfg.inception_weights, storage)
    model = load_inception(eval_cfg.inception_weights, storage, device)

    def fn(x):
        pool, logits = model(x.to(device))
        if not model.has_classifier:  # fid-helper's TorchScript: features only, no Inception Score
            return pool, pool.new_zeros(len(pool), 0)
        return pool, torch.softmax(logits.double(), dim=1).float()

    return LoadedExtractor("inception", PROTOCOL, weights_digest(path), 2048, _batched(fn, 100))


EXTRACTORS: Dict[str, Callable[..., LoadedExtractor]] = {"inception": _inception, "digits": _digits}


def extractor_name(cfg) -> str:
    """eval.extractor, with `auto`: the one the data set declares (the digits classifier for digits)."""
    from ganflow.data import spec

    name = cfg.eval.extractor
    return spec(cfg.data.name).extractor if name == "auto" else name


def load_extractor(cfg, storage=None, device: torch.device | str = "cpu") -> LoadedExtractor:
    return EXTRACTORS[extractor_name(cfg)](cfg.eval, storage, torch.device(device))
