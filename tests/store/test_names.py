"""Names someone else wrote (a manifest, a class list, an archive, a prepared set, a job's name)
never leave their root (issue 30, faults 1-4): one function owns the rule, every join asks it."""

from __future__ import annotations

import json

import pytest

from ganflow.config import ConfigError
from ganflow.job import load_job
from ganflow.store.names import UnsafeName, contained, hex_digest, part
from tests.conftest import JOBS, S3_ENV, cli_here, trained_checkpoint

HOSTILE = ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "", "a\x00b", "a\\..\\b", "x" * 300, ".."]


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_hostile_names_are_refused_and_plain_ones_pass(name):
    with pytest.raises(UnsafeName, match="refused|empty"):
        contained(name, "a name")
    assert contained("checkpoints/step_00000040/G.safetensors", "n") == "checkpoints/step_00000040/G.safetensors"
    assert part("class 3", "n") == "class 3"
    with pytest.raises(UnsafeName):
        part("a/b", "n")
    with pytest.raises(UnsafeName):
        hex_digest("../../../pwn", "n")


def test_a_bucket_checkpoint_whose_manifest_names_a_file_outside_is_refused_with_nothing_written(s3, tmp_path):
    from ganflow.run import checkpoint as ckpt
    from ganflow.store import S3Options, S3Store

    endpoint, bucket = s3
    local = trained_checkpoint(tmp_path, "ring.yaml", steps=1, overrides=("train.batch_size=64",))
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["files"]["../../escape.txt"] = manifest["files"]["G.safetensors"]
    store = S3Store(f"s3://{bucket}/runs", S3Options(endpoint_url=endpoint))
    ckpt.publish_to(store, local, "ring/run1/checkpoints/step_00000001")
    store.put_bytes("ring/run1/checkpoints/step_00000001/manifest.json", json.dumps(manifest).encode())
    store.put_bytes("ring/run1/escape.txt", b"from the bucket")
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = cli_here("sample", f"s3://{bucket}/runs/ring/run1/checkpoints/step_00000001", "--num", "4",
                    "--out", str(tmp_path / "s.npz"), env=env)
    assert proc.returncode == 2 and "'../../escape.txt' has a '..' part; refused" in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("escape.txt")) and not (tmp_path / "s.npz").exists()


def test_a_local_manifest_cannot_point_outside_its_checkpoint_and_synth_refuses_hostile_class_names(tmp_path):
    local = trained_checkpoint(tmp_path, "cdcgan_digits.yaml", steps=1, overrides=("model.ngf=4", "model.ndf=4",
                                                                                  "data.resolution=16"))
    original = (local / "manifest.json").read_text()
    manifest = json.loads(original)
    manifest["meta"]["classes"] = ["../../escape/c0"] + [f"/tmp/abs/c{k}" for k in range(1, 10)]
    (local / "manifest.json").write_text(json.dumps(manifest))
    proc = cli_here("synth", str(local), "--per-class", "1", "--out", str(tmp_path / "synth"))
    assert proc.returncode == 2 and "refused" in proc.stderr and not (tmp_path / "escape").exists(), proc.stderr
    manifest = json.loads(original)
    manifest["files"] = {"/etc/hostname": next(iter(manifest["files"].values()))}
    (local / "manifest.json").write_text(json.dumps(manifest))
    proc = cli_here("sample", str(local), "--num", "2", "--out", str(tmp_path / "s.npz"))
    assert proc.returncode == 2 and "'/etc/hostname' is absolute" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x" * 200, "my run", ""])
def test_a_job_name_is_a_folder_name_and_nothing_else(name):
    with pytest.raises(ConfigError, match="name: "):
        load_job(JOBS / "ring.yaml", [f"name='{name}'"])


# Every place ganflow joins a name it did not make to a folder or a key, and the source of that
# name. Found by `grep -rn "contained(\|part(\|hex_digest(" ganflow`; a new join of a name read
# from a bucket, a run, an archive or a checkpoint goes through ganflow.store.names and here.
JOIN_SITES = {
    "ganflow/store/s3.py": "a bucket checkpoint manifest's file names (fetch_dir)",
    "ganflow/run/checkpoint.py": "a checkpoint manifest's file names (fetch, local and bucket)",
    "ganflow/commands/synth.py": "a checkpoint's class names, made into folders under --out",
    "ganflow/data/prepare.py": "class folders of an archive, a folder or a bucket",
    "ganflow/data/prepared.py": "a prepared set's shard digests, made into cache file names",
    "ganflow/tracking/artifacts.py": "an offline W&B artifact's name and file names, made into a cache folder",
}


def test_every_join_of_an_untrusted_name_is_in_the_inventory_and_refuses_hostile_names(s3, tmp_path):
    import ast
    from pathlib import Path

    from ganflow.data.prepare import PrepareError, _apply_labels
    from ganflow.store import S3Options
    from ganflow.store.s3 import S3Store

    root = Path(__file__).resolve().parents[2]
    calls = set()
    for path in (root / "ganflow").rglob("*.py"):
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("contained", "part", "hex_digest"):
                calls.add(path.relative_to(root).as_posix())
    assert calls == set(JOIN_SITES), "a join site was added or removed: exercise it here"
    endpoint, bucket = s3
    store = S3Store(f"s3://{bucket}/run", S3Options(endpoint_url=endpoint))
    for name in HOSTILE:
        with pytest.raises(UnsafeName):
            store.fetch_dir("checkpoints/step_00000001", [name], tmp_path / "cache")
        if "/" not in name and "\\" not in name:  # a top folder name of an archive member
            with pytest.raises((UnsafeName, PrepareError)):
                _apply_labels("set.zip", "zip", [f"{name}/0.png", "ok/1.png"], "auto", None)
    assert not (tmp_path / "cache").exists(), "refused before anything is made"
