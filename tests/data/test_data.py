"""Data sets and the stateless sampler behind exact resume and DDP equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganflow import config
from ganflow.core.batch import BatchPlan
from ganflow.data import BatchSampler, build_dataset


def test_sampler_splits_the_global_batch_across_ranks():
    one = BatchSampler(100, BatchPlan(8), seed=3)
    two = [BatchSampler(100, BatchPlan(8, 2), seed=3, rank=r) for r in range(2)]
    for b in range(30):  # crosses epoch boundaries (100 is not a multiple of 8)
        assert torch.equal(one.indices(b), torch.cat([s.indices(b) for s in two]))


def test_sampler_visits_every_sample_once_per_epoch_and_is_deterministic():
    s = BatchSampler(64, BatchPlan(16), seed=1)
    first_epoch = torch.cat([s.indices(b) for b in range(4)])
    assert sorted(first_epoch.tolist()) == list(range(64))
    assert torch.equal(BatchSampler(64, BatchPlan(16), seed=1).indices(2), s.indices(2))
    assert not torch.equal(BatchSampler(64, BatchPlan(16), seed=2).indices(2), s.indices(2))


def test_sampler_batch_larger_than_the_data_set_spans_whole_epochs():
    s = BatchSampler(10, BatchPlan(24), seed=0)
    first = s.indices(0)
    assert len(first) == 24
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:20].tolist()) == list(range(10))
    assert not torch.equal(first[:10], first[10:20]), "each epoch has its own permutation"


@pytest.mark.parametrize("name,modes,std", [("ring", 8, 0.02), ("grid", 25, 0.05)])
def test_mixtures_have_the_documented_modes(name, modes, std):
    ds = build_dataset(config.DataConfig(name=name, num_points=5000))
    assert ds.centers.shape == (modes, 2)
    assert ds.x.shape == (5000, 2)
    err = ds.x - ds.centers[ds.y]
    assert err.std().item() == pytest.approx(std, rel=0.1)
    if name == "ring":
        assert torch.allclose(ds.centers.norm(dim=1), torch.full((8,), 2.0))


def test_digits_resized_in_range_with_labels():
    ds = build_dataset(config.DataConfig(name="digits", resolution=16))
    assert ds.x.shape == (1797, 1, 16, 16) and ds.num_classes == 10
    assert ds.x.min() >= -1 and ds.x.max() <= 1
    some = build_dataset(config.DataConfig(name="digits", resolution=16, classes=["7", "2"]))  # relabelled in that order
    assert some.num_classes == 2 and some.classes == ["7", "2"]
    assert torch.equal(some.x[some.y == 0], ds.x[ds.y == 7]) and torch.equal(some.x[some.y == 1], ds.x[ds.y == 2])


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = build_dataset(config.DataConfig(name="images", path=str(tmp_path), resolution=8))
    assert ds.x.shape == (6, 3, 8, 8) and ds.num_classes == 2
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    only = build_dataset(config.DataConfig(name="images", path=str(tmp_path), resolution=8, classes=["dogs"]))
    assert torch.equal(only.x, ds.x[3:]) and only.y.tolist() == [0, 0, 0] and only.classes == ["dogs"]


def test_empty_image_folder_names_the_key(tmp_path):
    with pytest.raises(config.ConfigError, match="data.path: no .png"):
        build_dataset(config.DataConfig(name="images", path=str(tmp_path), resolution=8))
