"""`ganflow score`: on a GAN trained on two digit classes, held-out digits score higher; the scores
are the same across Ray workers; npz and S3 in and out; bad input is one line and no CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch

from ganflow.config import DataConfig
from ganflow.data import build_dataset
from ganflow.store import S3Options, S3Store
from ganflow.commands.score import ScoreError, ScoreSettings, score_images
from tests.conftest import S3_ENV, run_cli, trained_checkpoint

HELD_IN, HELD_OUT = ("0", "1"), ("3", "7")


@pytest.fixture(scope="module")
def digits01(tmp_path_factory):
    """A DCGAN trained on digits 0 and 1 only (200 steps at 16x16, about 20 s)."""
    return trained_checkpoint(tmp_path_factory.mktemp("ck"), "quickstart.yaml", steps=200, overrides=(
        "data.resolution=16", "data.classes=[0,1]", "model.ngf=16", "model.ndf=16"))


def digit_folder(root, per_class: int = 30):
    """PNG class folders of real 8x8 digits, held-in and held-out."""
    from PIL import Image

    data = build_dataset(DataConfig(name="digits", resolution=8))
    for name in HELD_IN + HELD_OUT:
        (root / name).mkdir(parents=True)
        rows = (data.y == int(name)).nonzero().flatten()[:per_class]
        for i in rows.tolist():
            arr = ((data.x[i, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / name / f"{i:04d}.png")
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["disc", "recon"])
def test_held_out_digits_score_higher_than_the_digits_the_gan_was_trained_on(digits01, tmp_path, method):
    data = digit_folder(tmp_path / "digits")
    out = tmp_path / f"{method}.csv"
    done = run_cli("score", str(digits01), "--data", str(data), "--out", str(out), "--method", method, "--steps", "30")
    assert done.returncode == 0, done.stderr
    rows = read_csv(out)
    assert len(rows) == 30 * 4 and {r["label"] for r in rows} == set(HELD_IN + HELD_OUT)
    assert all(r["source"].endswith(".png") for r in rows)
    mean = {c: np.mean([float(r["score"]) for r in rows if r["label"] == c]) for c in HELD_IN + HELD_OUT}
    held_in, held_out = np.mean([mean[c] for c in HELD_IN]), np.mean([mean[c] for c in HELD_OUT])
    assert held_out > held_in, mean
    if method == "recon":  # the stronger method: every held-out digit above every held-in one
        assert min(mean[c] for c in HELD_OUT) > max(mean[c] for c in HELD_IN), mean
        assert {"residual", "feature_distance"} <= rows[0].keys()
    auroc = float(done.stderr.split("AUROC ")[1].split()[0])
    assert auroc > 0.6, done.stderr


def test_scores_are_the_same_with_one_process_or_two_ray_workers_and_read_npz_and_s3(digits01, s3, ray_cluster,
                                                                                    monkeypatch):
    endpoint, bucket = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    data = build_dataset(DataConfig(name="digits", resolution=16))
    buf = io.BytesIO()
    np.savez(buf, images=data.x[:300].numpy(), labels=data.y[:300].numpy())  # two batches
    store = S3Store(f"s3://{bucket}", S3Options())
    store.put_bytes("in/test.npz", buf.getvalue())
    settings = ScoreSettings(steps=5)
    one = score_images(str(digits01), f"s3://{bucket}/in/test.npz", "recon", settings)
    two = score_images(str(digits01), f"s3://{bucket}/in/test.npz", "recon", settings, workers=2)
    assert [r["label"] for r in one["rows"]] == [str(v) for v in data.y[:300].tolist()]
    assert np.allclose([r["score"] for r in one["rows"]], [r["score"] for r in two["rows"]], atol=1e-5)
    assert one["normal_classes"] == ["0", "1"] and one["auroc"] is not None

    done = run_cli("score", str(digits01), "--data", f"s3://{bucket}/in/test.npz", "--out", f"s3://{bucket}/out/s.csv",
                   env={**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_CONFIG_FILE": "/nonexistent"})
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(store.get_bytes("out/s.csv").decode())))
    assert len(rows) == 300 and rows[0]["source"].startswith(f"s3://{bucket}/in/test.npz[")


def test_bad_data_is_one_line_exit_2_and_no_csv(digits01, tmp_path):
    out = tmp_path / "s.csv"
    done = run_cli("score", str(digits01), "--data", str(tmp_path / "nothing"), "--out", str(out))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--data" in done.stderr and not out.exists()

    np.savez(tmp_path / "wrong.npz", images=np.zeros((4, 1, 32, 32), np.float32))
    with pytest.raises(ScoreError, match=r"shaped \(1, 32, 32\); this run's are \(1, 16, 16\)"):
        score_images(str(digits01), str(tmp_path / "wrong.npz"))
    with pytest.raises(ScoreError, match="--method"):
        score_images(str(digits01), "digits", method="knn")
