"""The two stores runs live in (a directory, an S3 bucket on a real loopback server) behave alike,
and S3 failures come back as one line naming what to fix."""

from __future__ import annotations

import os

import boto3
import pytest

from ganflow.store import LocalStore, NotFound, S3Options, S3Store, StorageError, open_store
from tests.conftest import free_port


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "root")
    endpoint, bucket = request.getfixturevalue("s3")
    return S3Store(f"s3://{bucket}/team/runs", S3Options(endpoint_url=endpoint))


def test_stores_round_trip_bytes_and_files_and_list_keys(store, tmp_path):
    store.check()
    store.put_bytes("exp/run1/config.yaml", b"a: 1\n")
    store.put_bytes("exp/run1/checkpoints/step_00000010/manifest.json", b"{}")
    src = tmp_path / "g.safetensors"
    src.write_bytes(os.urandom(1000))
    store.put_file("exp/run1/checkpoints/step_00000010/G.safetensors", src)
    store.put_bytes("exp/run2/config.yaml", b"b: 2\n")

    assert store.get_bytes("exp/run1/config.yaml") == b"a: 1\n"
    store.get_file("exp/run1/checkpoints/step_00000010/G.safetensors", tmp_path / "back" / "g")
    assert (tmp_path / "back" / "g").read_bytes() == src.read_bytes()
    assert store.list("exp/run1") == ["exp/run1/checkpoints/step_00000010/G.safetensors",
                                      "exp/run1/checkpoints/step_00000010/manifest.json", "exp/run1/config.yaml"]
    assert store.list_dirs("exp") == ["run1", "run2"]
    assert store.list_dirs("exp/run1/checkpoints") == ["step_00000010"]
    assert store.exists("exp/run1/config.yaml") and not store.exists("exp/run1/nope")
    with pytest.raises(NotFound):
        store.get_bytes("exp/run1/nope")
    store.delete_prefix("exp/run1")
    assert store.list("exp") == ["exp/run2/config.yaml"]


def test_store_uris_name_the_place(tmp_path):
    assert open_store(tmp_path).uri("a/b") == str(tmp_path / "a" / "b")
    assert open_store("s3://bkt/pre/fix", S3Options(endpoint_url="http://127.0.0.1:1")).uri("a/b") == "s3://bkt/pre/fix/a/b"


def test_large_objects_go_up_in_parts_and_come_back_intact(s3, tmp_path):
    endpoint, bucket = s3
    store = S3Store(f"s3://{bucket}/big", S3Options(endpoint_url=endpoint))
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024))
    store.put_file("ckpt/D.safetensors", src)
    head = boto3.client("s3", endpoint_url=endpoint).head_object(Bucket=bucket, Key="big/ckpt/D.safetensors")
    assert head["ETag"].strip('"').endswith("-3"), "a 40 MiB object is uploaded as three 16 MiB parts"
    store.get_file("ckpt/D.safetensors", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_missing_bucket_is_one_line_naming_the_bucket(s3):
    endpoint, _ = s3
    with pytest.raises(StorageError, match=r"^storage.uri: bucket 'no-such-bucket' does not exist at http://127.0.0.1"):
        S3Store("s3://no-such-bucket/x", S3Options(endpoint_url=endpoint)).check()


def test_unreachable_endpoint_is_one_line_naming_the_setting_after_logged_retries(s3, caplog):
    _, bucket = s3
    dead = f"http://127.0.0.1:{free_port()}"
    store = S3Store(f"s3://{bucket}/x", S3Options(endpoint_url=dead, max_attempts=2))
    with caplog.at_level("WARNING", logger="ganflow.storage"):
        with pytest.raises(StorageError, match=r"^storage.endpoint_url: cannot reach http://127.0.0.1:\d+ "):
            store.put_bytes("k", b"x")
    assert "PutObject attempt 1/2 failed (EndpointConnectionError); retrying" in caplog.text
    assert "PutObject attempt 2/2 failed (EndpointConnectionError); giving up" in caplog.text


def test_the_preflight_check_fails_fast_and_quietly(s3, caplog):
    """Before a run starts, a wrong endpoint is one line, not a screen of retries."""
    _, bucket = s3
    dead = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level("WARNING", logger="ganflow.storage"):
        with pytest.raises(StorageError, match=r"^storage.endpoint_url: cannot reach http://127.0.0.1:\d+ "):
            S3Store(f"s3://{bucket}/x", S3Options(endpoint_url=dead, max_attempts=50)).check()
    assert caplog.text == ""


def test_missing_credentials_say_where_credentials_come_from(s3, monkeypatch):
    endpoint, bucket = s3
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(StorageError, match=r"^storage: no AWS credentials found; set AWS_ACCESS_KEY_ID"):
        S3Store(f"s3://{bucket}/x", S3Options(endpoint_url=endpoint, max_attempts=1)).check()


def test_a_failed_write_or_download_keeps_the_old_file_and_leaves_no_temporary(store, tmp_path):
    store.put_bytes("exp/run/config.yaml", b"old")
    with pytest.raises((OSError, StorageError)):
        store.put_file("exp/run/config.yaml", tmp_path / "no-such-source")
    assert store.get_bytes("exp/run/config.yaml") == b"old"
    assert store.list("exp") == ["exp/run/config.yaml"]
    dest = tmp_path / "dl" / "config.yaml"
    dest.parent.mkdir()
    dest.write_bytes(b"local")
    with pytest.raises(NotFound):
        store.get_file("exp/run/missing", dest)
    assert dest.read_bytes() == b"local" and [p.name for p in dest.parent.iterdir()] == ["config.yaml"]
