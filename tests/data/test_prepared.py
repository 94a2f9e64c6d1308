"""Prepared data sets: `ganflow data prepare` from a folder, a bucket and a StyleGAN zip, resumed
after a cut, checked against its manifest; training batches read from it (the same global batches
for 1 and 2 workers, a pure function of the step), with bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ganflow.config import ConfigError, DataConfig
from ganflow.core.batch import BatchPlan
from ganflow.data import build_dataset, dataset_batches
from ganflow.data.images import square_resize
from ganflow.data.prepare import Settings, Source, finish, list_source
from ganflow.data.prepared import MANIFEST, PreparedSet, shard_done, shard_name
from ganflow.store import file_sha256
from tests.conftest import JOBS, run_cli

PER_CLASS = 100  # images per class folder: 300 in all, plus one corrupt file


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """300 PNG/JPEG files of odd sizes, grey and RGB, in three class folders (some nested deeper),
    and a corrupt PNG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(0)
    for c in ("ants", "bees", "cats"):
        for i in range(PER_CLASS):
            folder = root / c / ("deeper" if i % 7 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            h, w = (int(v) for v in rng.integers(9, 41, 2))
            grey = i % 3 == 0
            arr = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr, "L" if grey else "RGB").save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    (root / "bees" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def prepare(*args, **kw):
    return run_cli("data", "prepare", *args, **kw)


def prepare_here(capsys, *args) -> subprocess.CompletedProcess:
    """`ganflow data prepare ARGS` in this process (one worker: no Ray), as a finished process."""
    from ganflow import cli

    capsys.readouterr()
    code = cli.main(["data", "prepare", *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "set"
    proc = prepare(str(source), "--out", str(out), "--resolution", "16", "--shard-size", "64", "--workers", "1",
                   "--reference", "none", env={"RAY_ADDRESS": None})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "skipped bees/broken.png: not a readable PNG/JPEG" in proc.stderr
    return out


def test_a_folder_is_prepared_resized_once_labelled_by_top_folder_with_the_corrupt_file_skipped(source, prepared):
    from PIL import Image

    manifest = json.loads((prepared / MANIFEST).read_text())
    assert manifest["count"] == 3 * PER_CLASS and manifest["shape"] == [3, 16, 16]
    assert manifest["classes"] == ["ants", "bees", "cats"]  # nested folders belong to their top folder
    assert [s[0] for s in manifest["skipped"]] == ["bees/broken.png"]
    assert len(manifest["shards"]) == 5 and all(len(s["sha256"]) == 64 for s in manifest["shards"])
    data = PreparedSet(str(prepared))
    names = list_source(str(source)).names
    names.remove("bees/broken.png")
    for i in (0, 1, 150, 299):  # image i is the i-th decodable file in sorted order, cropped and resized
        with Image.open(source / names[i]) as im:
            expected = square_resize(im, 16, 3)
        np.testing.assert_array_equal(data.images([i])[0], expected)
        assert data.labels[i] == ["ants", "bees", "cats"].index(names[i].split("/")[0])
    # the shards are plain .npy files: numpy (and Ray Data's read_numpy) read them as they are
    first = np.load(prepared / shard_name(0))
    assert first.dtype == np.uint8 and first.shape == (64, 3, 16, 16)
    np.testing.assert_array_equal(first[5], data.images([5])[0])


def test_a_cut_prepare_resumes_with_the_missing_shards_only_and_other_settings_are_refused(source, prepared, tmp_path,
                                                                                            capsys):
    import shutil

    out = tmp_path / "set"
    shutil.copytree(prepared, out)
    # the state a cut leaves: no manifest or labels yet, shard 3 written but not marked done, shard 4 absent
    for name in (MANIFEST, "labels.npy", shard_done(3), shard_name(4), shard_done(4)):
        (out / name).unlink()
    kept = {i: (out / shard_name(i)).stat().st_mtime_ns for i in range(3)}
    proc = prepare_here(capsys, str(source), "--out", str(out), "--resolution", "16", "--shard-size", "64",
                        "--workers", "1", "--reference", "none")
    assert proc.returncode == 0, proc.stderr
    assert "3 shard(s) already written, 2 to go" in proc.stderr
    assert {i: (out / shard_name(i)).stat().st_mtime_ns for i in range(3)} == kept
    assert json.loads((out / MANIFEST).read_text()) == json.loads((prepared / MANIFEST).read_text())
    proc = prepare_here(capsys, str(source), "--out", str(out), "--resolution", "16")
    assert proc.returncode == 0 and "already a prepared set of 300 images" in proc.stderr
    (out / MANIFEST).unlink()
    proc = prepare_here(capsys, str(source), "--out", str(out), "--resolution", "32", "--shard-size", "64",
                        "--reference", "none")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ganflow: error: --out:") and "other resolution" in line


def test_a_shard_that_does_not_match_its_checksum_is_refused_by_name(prepared, tmp_path):
    import shutil

    out = tmp_path / "set"
    shutil.copytree(prepared, out)
    with open(out / shard_name(2), "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    data = PreparedSet(str(out))
    data.images([0])  # shard 0 is fine
    with pytest.raises(ConfigError, match=r"shard-00002.npy fails its sha256 check against manifest.json"):
        data.images([150])
    assert PreparedSet(str(out), verify=False).images([150]).shape == (1, 3, 16, 16)  # data.verify=false


def test_a_stylegan_zip_is_prepared_with_its_dataset_json_labels(tmp_path, capsys):
    from PIL import Image

    archive = tmp_path / "set.zip"
    labels = []
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(20):
            name = f"{i // 10:05d}/img{i:08d}.png"
            buf = __import__("io").BytesIO()
            Image.fromarray(np.full((24, 24, 3), i * 10, np.uint8)).save(buf, format="PNG")
            z.writestr(name, buf.getvalue())
            labels.append([name, i % 4])
        z.writestr("dataset.json", json.dumps({"labels": labels}))
    out = tmp_path / "out"
    proc = prepare_here(capsys, str(archive), "--out", str(out), "--resolution", "8", "--reference", "none")
    assert proc.returncode == 0, proc.stderr
    data = PreparedSet(str(out))
    assert len(data) == 20 and data.classes == ["0", "1", "2", "3"]
    assert data.labels.tolist() == [i % 4 for i in range(20)]
    assert data.images([13])[0].max() == 130 and data.images([13])[0].min() == 130


def test_bad_arguments_fail_in_one_line_before_anything_is_written(source, tmp_path, capsys):
    cases = [
        (["/nonexistent/images"], "SOURCE: '/nonexistent/images' is not a folder"),
        ([str(source), "--resolution", "24"], "--resolution: must be a power of two"),
        ([str(source), "--labels", "maybe"], "--labels: 'maybe' is not folders, none or a dataset.json file"),
        ([str(source), "--reference", "-3"], "--reference: all, none or a count > 0"),
    ]
    for args, message in cases:
        full = [args[0], "--out", str(tmp_path / "out"), "--resolution", "16", *args[1:]]
        proc = prepare_here(capsys, *full)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert message in line
        assert not (tmp_path / "out").exists()


def test_a_bucket_is_prepared_to_a_bucket_by_two_ray_workers_and_read_back_through_a_checked_cache(
        cli, source, prepared, s3, tmp_path, monkeypatch):
    import boto3

    endpoint, bucket = s3
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in source.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"raw/{path.relative_to(source).as_posix()}")
    out = f"s3://{bucket}/prepared"
    # on the session's cluster, whose processes have credentials but no endpoint: the command passes its own on
    proc = cli("data", "prepare", f"s3://{bucket}/raw", "--out", out, "--resolution", "16", "--shard-size", "64",
               "--workers", "2", "--reference", "200", "--extractor", "digits", env={"AWS_ENDPOINT_URL": endpoint})
    assert proc.returncode == 0, proc.stderr
    assert "with 2 worker(s)" in proc.stderr and "skipped bees/broken.png" in proc.stderr
    remote = json.loads(client.get_object(Bucket=bucket, Key="prepared/manifest.json")["Body"].read())
    local = json.loads((prepared / MANIFEST).read_text())
    assert remote["shards"] == local["shards"]  # the same bytes, whoever wrote them
    # reference statistics made by the two workers equal those made in one process
    import shutil

    from ganflow.metrics.reference import Reference, reference_for_prepared

    shutil.copytree(prepared, tmp_path / "copy")
    reference_for_prepared(str(tmp_path / "copy"), None, "digits", None, 200, progress=False)
    here = Reference.from_bytes((tmp_path / "copy" / "reference-digits.safetensors").read_bytes())
    there = Reference.from_bytes(client.get_object(Bucket=bucket, Key="prepared/reference-digits.safetensors")["Body"].read())
    assert remote["reference"]["digits"]["count"] == 200
    np.testing.assert_allclose(there.mu, here.mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(there.sigma, here.sigma, rtol=0, atol=1e-9)
    assert torch.equal(there.features, here.features)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("GANFLOW_CACHE", str(tmp_path / "cache"))
    data = build_dataset(DataConfig(name="prepared", path=out, resolution=16))
    assert len(data) == 300 and data.classes == ["ants", "bees", "cats"]
    np.testing.assert_array_equal(data.source.images([0, 299]), PreparedSet(str(prepared)).images([0, 299]))
    cached = sorted((tmp_path / "cache" / "prepared").glob("*.npy"))
    assert len(cached) == 2  # only the shards read were fetched
    with open(cached[0], "r+b") as f:  # a cached copy damaged on this machine is checked and fetched again
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    again = build_dataset(DataConfig(name="prepared", path=out, resolution=16))
    np.testing.assert_array_equal(again.source.images([0, 299]), PreparedSet(str(prepared)).images([0, 299]))
    assert {file_sha256(p)[:32] for p in cached} == {p.stem for p in cached}


def test_batches_are_the_same_global_batches_for_one_and_two_workers_and_a_pure_function_of_the_step(prepared):
    cfg = DataConfig(name="prepared", path=str(prepared), resolution=16, classes=["bees", "cats"])
    data = build_dataset(cfg)
    assert len(data) == 2 * PER_CLASS and data.num_classes == 2
    one = dataset_batches(data, BatchPlan(32), seed=3, labels=True, flip=True)
    halves = [dataset_batches(data, BatchPlan(32, 2), seed=3, labels=True, rank=r, flip=True) for r in (0, 1)]
    for step in (0, 1, 6, 7, 13):  # 200 images, 32 a batch: steps 6 and 12 straddle epochs
        x, y = one(step)
        parts = [h(step) for h in halves]
        torch.testing.assert_close(x, torch.cat([p[0] for p in parts]), rtol=0, atol=0)
        assert torch.equal(y, torch.cat([p[1] for p in parts]))
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    plain_steps = [dataset_batches(data, BatchPlan(32), seed=3, labels=True)(s)[0] for s in range(3)]
    ahead = dataset_batches(data, BatchPlan(32), seed=3, labels=True)
    ahead.prefetch = True  # as on a GPU: the next batch read in a thread while this one trains
    assert all(torch.equal(ahead(s)[0], plain_steps[s]) for s in range(3))
    resumed = dataset_batches(data, BatchPlan(32), seed=3, labels=True, flip=True)  # a restarted worker, at step 7
    assert torch.equal(resumed(7)[0], one(7)[0])
    plain = dataset_batches(data, BatchPlan(32), seed=3, labels=True, flip=False)(7)[0]
    flipped = (one(7)[0] != plain).flatten(1).any(1)
    assert torch.equal(one(7)[0][flipped], plain[flipped].flip(3)) and 0 < flipped.sum() < 32
    full = build_dataset(DataConfig(name="prepared", path=str(prepared), resolution=16))
    assert set(full.source.labels[data.rows.numpy()].tolist()) == {1, 2}  # bees, cats: relabelled 0, 1
    assert torch.equal(data.y, torch.from_numpy(full.source.labels[data.rows.numpy()] - 1))


def test_training_on_a_prepared_set_with_classes_and_flips(cli, prepared, tmp_path):
    proc = cli("train", str(JOBS / "quickstart.yaml"), "data.name=prepared", f"data.path={prepared}",
                   "data.resolution=16", "data.xflip=true", "data.classes=[ants,cats]", "model.name=cdcgan",
                   "model.ngf=8", "model.ndf=8", "train.steps=3", "train.batch_size=16", "train.log_every=1",
                   "train.checkpoint_every=3", "train.sample_every=3", "scaling.resources_per_worker.CPU=1",
                   f"storage.uri={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(proc.stdout.strip().splitlines()[-1])
    config = (run / "config.yaml").read_text()
    assert "name: prepared" in config and "xflip: true" in config
    assert (run / "samples" / "step_00000003.png").is_file()  # a conditional grid of the two kept classes


def test_config_mismatches_with_the_prepared_set_name_the_field(prepared):
    from ganflow.job import load_job

    with pytest.raises(ConfigError, match="data.classes: \\['wasps'\\] not among the classes \\['ants', 'bees', 'cats'\\]"):
        load_job(JOBS / "quickstart.yaml", ["data.name=prepared", f"data.path={prepared}", "data.classes=[wasps]"])
    cfg = load_job(JOBS / "quickstart.yaml", ["data.name=prepared", f"data.path={prepared}"])
    with pytest.raises(ConfigError, match="data.resolution: the prepared set at .* holds 16x16 images; set data.resolution=16"):
        build_dataset(cfg.data)
    with pytest.raises(ConfigError, match="is not a prepared data set \\(no manifest.json\\)"):
        build_dataset(DataConfig(name="prepared", path=str(prepared / "shards"), resolution=16))


RSS_SCRIPT = """
import resource, sys, torch
from ganflow.core.batch import BatchPlan
from ganflow.data import build_dataset, dataset_batches
from ganflow.config import DataConfig
data = build_dataset(DataConfig(name="prepared", path=sys.argv[1], resolution=64, cache_mb=16))
batches = dataset_batches(data, BatchPlan(256), seed=0, labels=False)
batches(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for step in range(1, 2 * len(data) // 256):  # every image, twice
    x, _ = batches(step)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) * 1024)
"""


@pytest.mark.slow
def test_a_worker_reads_a_set_four_times_its_memory_bound_without_holding_it(tmp_path):
    """A synthetic 3x64x64 set of 24,576 images (302 MB), read twice over: the worker's peak RSS grows
    by less than 64 MB (the bound: its 16 MB cache, the batches in flight, the prefetch)."""
    from ganflow.store import open_store

    out, n, per = tmp_path / "big", 24576, 2048
    out.mkdir()
    store = open_store(str(out))
    rng = np.random.default_rng(0)
    shards = []
    for k in range(n // per):
        (out / "shards").mkdir(exist_ok=True)
        np.save(out / shard_name(k), rng.integers(0, 256, (per, 3, 64, 64), dtype=np.uint8))
        shards.append({"index": k, "count": per, "bytes": (out / shard_name(k)).stat().st_size,
                       "sha256": file_sha256(out / shard_name(k)), "labels": [-1] * per, "skipped": []})
    src = Source(str(out), "folder", [str(i) for i in range(n)], [-1] * n, [])
    finish(store, src, Settings(64, 3, per), shards)
    size = sum(s["bytes"] for s in shards)
    assert size > 4 * 64 * 2**20
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    grew = int(proc.stdout.strip().splitlines()[-1])
    assert grew < 64 * 2**20, f"peak RSS grew by {grew / 2**20:.0f} MB reading a {size / 2**20:.0f} MB set"


@pytest.fixture(scope="module")
def digits_prepared(tmp_path_factory) -> Path:
    """scikit-learn's 1797 digits as 8x8 PNGs in class folders, prepared at 32 px grey with reference
    statistics of every image under the digits extractor (fast on a CPU; the Inception path is the same)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    bunch = load_digits()
    for i, (image, label) in enumerate(zip(bunch.images, bunch.target)):
        (root / "src" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), "L").save(root / "src" / str(label) / f"{i:04d}.png")
    proc = prepare(str(root / "src"), "--out", str(root / "set"), "--resolution", "32", "--channels", "1",
                   "--reference", "all", "--extractor", "digits", "--workers", "1", env={"RAY_ADDRESS": None})
    assert proc.returncode == 0, proc.stderr
    return root / "set"


def test_reference_statistics_made_at_prepare_time_are_what_training_and_eval_compare_with(digits_prepared, tmp_path):
    from ganflow.job import build_training, load_job
    from ganflow.metrics.features import load_extractor
    from ganflow.metrics.kernels import feature_stats
    from ganflow.metrics.scoring import Scorer

    manifest = json.loads((digits_prepared / MANIFEST).read_text())
    assert manifest["reference"]["digits"]["count"] == 1797 and (digits_prepared / "reference-digits.safetensors").is_file()
    overrides = ["data.name=prepared", f"data.path={digits_prepared}", "eval.extractor=digits", "eval.metrics=[fid]",
                 "model.ngf=8", "model.ndf=8", f"storage.uri={tmp_path}"]
    cfg = load_job(JOBS / "quickstart.yaml", overrides)
    _, state = build_training(cfg, torch.device("cpu"))
    scorer = Scorer(cfg, ["fid"])
    fid = scorer(state.G.eval(), num=200)["fid"]
    assert scorer.reference_used == f"prepared set {digits_prepared} (1797 images)"
    assert not (tmp_path / ".reference").exists()  # nothing extracted at training time
    # the stored statistics are those of every image's features
    data = build_dataset(cfg.data)
    features = load_extractor(cfg).extract(data.take(torch.arange(len(data))))[0]
    mu, sigma = feature_stats(features.numpy())
    np.testing.assert_allclose(scorer.reference.mu, mu, atol=1e-5)
    np.testing.assert_allclose(scorer.reference.sigma, sigma, atol=1e-5)
    # published statistics (an .npz of mu and sigma) give the same FID
    np.savez(tmp_path / "published.npz", mu=scorer.reference.mu, sigma=scorer.reference.sigma)
    cfg = load_job(JOBS / "quickstart.yaml", overrides + [f"eval.reference={tmp_path / 'published.npz'}"])
    scorer = Scorer(cfg, ["fid"])
    assert scorer(state.G.eval(), num=200)["fid"] == pytest.approx(fid, rel=1e-9)
    assert scorer.reference_used.startswith(f"{tmp_path / 'published.npz'} (published statistics")
    with pytest.raises(ConfigError, match=r"eval.reference: published statistics give FID only"):
        load_job(JOBS / "quickstart.yaml", overrides[:-2] + [f"eval.reference={tmp_path / 'published.npz'}",
                                                            "eval.metrics=[fid,kid]"])
    with pytest.raises(ConfigError, match=r"eval.reference: no file at"):
        load_job(JOBS / "quickstart.yaml", overrides + [f"eval.reference={tmp_path / 'absent.npz'}"])
