"""Image data sets in a bucket on the loopback S3 server, streamed by Ray Data into Ray Train workers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganflow import config
from ganflow.job import load_job
from ganflow.data import build_dataset
from ganflow.store import S3Options, S3Store
from ganflow.run.run import Run
from tests.conftest import JOBS, cli_here

pytestmark = pytest.mark.slow

PER_CLASS, CLASSES = 24, ("cats", "dogs")


def pngs():
    """48 small images (non-square, so the centre crop matters) in two class folders: (key, pixels)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            yield f"{name}/img_{i:03d}.png", rng.integers(0, 256, (20, 28), dtype=np.uint8) // 2 + 128 * c  # class 1 is brighter


def put_pngs(endpoint: str, bucket: str, prefix: str = "images") -> list:
    """`pngs()` as PNG files in the bucket (and one file that is not an image); returns their keys."""
    store = S3Store(f"s3://{bucket}/{prefix}", S3Options(endpoint_url=endpoint))
    keys = []
    for key, pixels in pngs():
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buf, format="PNG")
        store.put_bytes(key, buf.getvalue())
        keys.append(f"{bucket}/{prefix}/{key}")
    store.put_bytes("README.txt", b"not an image")
    return keys


def image_cfg(endpoint: str, bucket: str, *overrides: str):
    return load_job(JOBS / "quickstart.yaml", [
        "data.name=images", f"data.path=s3://{bucket}/images", "data.resolution=16", "data.channels=1",
        f"storage.endpoint_url={endpoint}", f"storage.uri=s3://{bucket}/runs", "model.ngf=8", "model.ndf=8", "model.nz=16",
        "train.batch_size=16", *overrides])


def read_shard(loop_config: dict) -> None:
    """A Ray Train worker that reads one epoch of its shard through the batches ganflow's loop trains on."""
    import ray.train

    from ganflow.job import batches_for
    from ganflow.store import store_options

    cfg = config.from_dict(loop_config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    ds = build_dataset(cfg.data, 0, store_options(cfg.storage))
    batches = batches_for(cfg, ds, rank, world, shard=ray.train.get_dataset_shard("train"))
    rows, labels = [], []
    for i in range(len(ds) // cfg.train.batch_size):
        x, y = batches(i)
        assert x.shape == (cfg.train.batch_size // world, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
        rows += x.tolist()
        labels += y.tolist()
    with open(f"{loop_config['out']}/rank{rank}.json", "w") as f:
        json.dump({"rows": rows, "labels": labels}, f)


def test_two_workers_each_stream_a_disjoint_shard_of_the_bucket_mirrored_by_xflip(ray_cluster, s3, tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from ganflow.data.images import square_resize
    from ganflow.ray.stream import ray_dataset
    from ganflow.store import store_options

    endpoint, bucket = s3
    put_pngs(endpoint, bucket)
    cfg = image_cfg(endpoint, bucket, "data.xflip=true", "model.name=cdcgan")  # conditional: the batches carry labels
    described = build_dataset(cfg.data, 0, store_options(cfg.storage))
    assert described.streamed and len(described) == 48 and described.classes == list(CLASSES)
    assert described.shape == (1, 16, 16) and described.num_classes == 2

    TorchTrainer(
        read_shard,
        train_loop_config={"job": cfg.to_dict(), "out": str(tmp_path)},
        datasets={"train": ray_dataset(cfg.data, store_options(cfg.storage), described.classes)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(storage_path=str(tmp_path / "ray")),
    ).fit()
    images = {key: torch.from_numpy(square_resize(Image.fromarray(p, mode="L"), 16, 1)).float() / 127.5 - 1
              for key, p in pngs()}
    seen, mirrored = [], 0
    for rank in range(2):
        shard = json.loads((tmp_path / f"rank{rank}.json").read_text())
        mine = []
        for row, label in zip(shard["rows"], shard["labels"]):
            x = torch.tensor(row)
            plain = [k for k, im in images.items() if torch.allclose(x, im, atol=1e-6)]
            flipped = [k for k, im in images.items() if torch.allclose(x, im.flip(2), atol=1e-6)]
            assert len(plain + flipped) == 1, "each row is one of the bucket's images, as it is or mirrored"
            mirrored += bool(flipped)
            key = (plain + flipped)[0]
            assert CLASSES.index(key.split("/")[0]) == label, "labels come from the class folder"
            mine.append(key)
        seen.append(set(mine))
        assert len(mine) == len(seen[-1]) == 24, "each worker reads its own half"
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(images), "together they read every image once per epoch"
    assert 12 <= mirrored <= 36, f"data.xflip mirrors about half the images of a stream ({mirrored} of 48)"


def test_ganflow_trains_on_images_in_a_bucket_with_two_workers(cli, s3, tmp_path):
    endpoint, bucket = s3
    put_pngs(endpoint, bucket)
    proc = cli("train", str(JOBS / "quickstart.yaml"), "data.name=images", f"data.path=s3://{bucket}/images",
               "data.resolution=16", "data.channels=1", f"storage.endpoint_url={endpoint}", f"storage.uri=s3://{bucket}/runs",
               "model.ngf=8", "model.ndf=8", "model.nz=16", "train.batch_size=16", "train.steps=8", "train.log_every=2",
               "train.checkpoint_every=8", "scaling.num_workers=2", "scaling.resources_per_worker.CPU=0.5", check=True)
    run = Run.open(proc.stdout.strip().splitlines()[-1], S3Options(endpoint_url=endpoint))
    records = run.read_metrics()
    assert [r["step"] for r in records] == [2, 4, 6, 8]  # 8 steps of 16 over 48 images: several epochs
    assert all(np.isfinite(r["loss/d"]) and np.isfinite(r["loss/g"]) for r in records)
    _, state, manifest = run.load_latest_checkpoint()
    assert state["step"] == 8 and manifest["meta"]["num_classes"] == 2 and manifest["meta"]["sample_shape"] == [1, 16, 16]


def test_a_bucket_prefix_without_images_is_a_config_error(s3, tmp_path):
    endpoint, bucket = s3
    proc = cli_here("train", str(JOBS / "quickstart.yaml"), "data.name=images", f"data.path=s3://{bucket}/nothing-here",
                    f"storage.endpoint_url={endpoint}", f"storage.uri=s3://{bucket}/runs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"ganflow: error: config: data.path: no .png/.jpg/.jpeg objects under s3://{bucket}/nothing-here"
    assert S3Store(f"s3://{bucket}", S3Options(endpoint_url=endpoint)).list() == [], "nothing written"
