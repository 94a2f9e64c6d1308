"""`ganflow synth`: exact counts, a complete manifest, files the images data set reads back with
their labels, the same files for the same seed however many Ray workers draw them, and S3."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from ganflow.job import load_job
from ganflow.data import build_dataset
from ganflow.store import S3Options, S3Store
from ganflow.commands.synth import MANIFEST, SHARD_SIZE, plan, synthesize
from tests.conftest import JOBS, S3_ENV, cli_here, run_cli, trained_checkpoint


@pytest.fixture(scope="module")
def cdcgan(tmp_path_factory):
    return trained_checkpoint(tmp_path_factory.mktemp("ck"), "cdcgan_digits.yaml")


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_a_png_set_has_exact_class_counts_a_manifest_and_reads_back_as_a_labelled_images_data_set(cdcgan, tmp_path):
    out = tmp_path / "synth"
    manifest = synthesize(str(cdcgan), str(out), per_class=3, seed=1)
    folders = [f"{k}" for k in range(10)]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == folders
    assert all(len(list((out / f).glob("*.png"))) == 3 for f in folders)
    assert manifest["counts"] == {f: 3 for f in folders} and manifest["total"] == 30
    saved = json.loads((out / MANIFEST).read_text())
    assert saved == manifest
    for key in ("run", "checkpoint", "step", "seed", "truncation", "format", "classes", "shards"):
        assert key in saved
    assert saved["checkpoint"] == str(cdcgan) and saved["seed"] == 1

    cfg = load_job(JOBS / "dcgan_images_64.yaml", [f"data.path={out}", "data.resolution=32", "data.channels=1"])
    ds = build_dataset(cfg.data)
    assert len(ds) == 30 and ds.num_classes == 10
    assert np.bincount(ds.y.numpy()).tolist() == [3] * 10
    assert ds.x.shape == (30, 1, 32, 32) and ds.x.min() >= -1 and ds.x.max() <= 1


def test_the_same_seed_gives_the_same_files_with_one_process_or_two_ray_workers(cdcgan, tmp_path, ray_cluster):
    synthesize(str(cdcgan), str(tmp_path / "a"), num=25, seed=4, truncation=1.5)
    synthesize(str(cdcgan), str(tmp_path / "b"), num=25, seed=4, truncation=1.5, workers=2)
    synthesize(str(cdcgan), str(tmp_path / "c"), num=25, seed=5, truncation=1.5)
    a, b, c = (files_of(tmp_path / x) for x in "abc")
    assert len(a) == 25 and a == b
    assert a.keys() == c.keys() and a != c  # another seed, other images
    counts = json.loads((tmp_path / "a" / MANIFEST).read_text())["counts"]
    assert sorted(counts.values()) == [2] * 5 + [3] * 5  # 25 over 10 classes


def test_large_sets_are_cut_into_shards_of_one_class():
    shards = plan(None, SHARD_SIZE * 2 + 1, 3)
    assert [(s.label, s.start, s.count) for s in shards[:3]] == [(0, 0, SHARD_SIZE), (0, SHARD_SIZE, SHARD_SIZE),
                                                                 (0, 2 * SHARD_SIZE, 1)]
    assert sum(s.count for s in shards) == 3 * (2 * SHARD_SIZE + 1) and [s.index for s in shards] == list(range(9))


def test_npz_shards_in_a_bucket_from_the_cli(cdcgan, s3, tmp_path):
    endpoint, bucket = s3
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    proc = run_cli("synth", str(cdcgan), "--per-class", "2", "--format", "npz", "--out", f"s3://{bucket}/synth", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "20 images" in proc.stderr and "images/s" in proc.stderr
    assert "[ganflow] synth: 20/20 images (100%)" in proc.stderr  # progress, a line per 10% off a terminal
    store = S3Store(f"s3://{bucket}/synth", S3Options(endpoint_url=endpoint))
    keys = store.list()
    assert keys[-1] == MANIFEST and len(keys) == 11
    shard = np.load(io.BytesIO(store.get_bytes("shard_00003.npz")))
    assert shard["images"].shape == (2, 1, 32, 32) and shard["images"].dtype == np.float32
    assert shard["labels"].tolist() == [3, 3]


def test_bad_requests_are_one_line_and_write_nothing(cdcgan, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["--num", "5", "--out", str(taken)], "is not empty"),
        (["--out", str(tmp_path / "new")], "give --num N or --per-class K"),
        (["--num", "5", "--truncation", "0", "--out", str(tmp_path / "new")], "--truncation: must be >= 0.1"),
        (["--num", "5", "--truncation", "1e-9", "--out", str(tmp_path / "new")], "--truncation: must be >= 0.1"),
    ]
    for args, message in cases:
        proc = cli_here("synth", str(cdcgan), *args)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and not (tmp_path / "new").exists()
    ring = trained_checkpoint(tmp_path, "ring.yaml", steps=1)
    proc = cli_here("synth", str(ring), "--num", "5", "--out", str(tmp_path / "new"))
    assert proc.returncode == 2 and "2D points" in proc.stderr and not (tmp_path / "new").exists()
