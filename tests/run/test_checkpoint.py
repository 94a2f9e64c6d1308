"""Checkpoints: exact round trip of the whole training state, checksums, incomplete ones skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganflow.core.state import DataMeta
from ganflow.run import checkpoint as ckpt
from ganflow.run.layout import RunLayout
from ganflow.core.fit import fit
from ganflow.store import LocalStore
from ganflow.job import batches_for, build_training, load_job


def _trained_state(overrides=(), steps=2):
    cfg = load_job(None, ["data.resolution=16", "model.ngf=8", "model.ndf=8", "train.batch_size=8", f"train.steps={steps}",
                          *overrides])
    ds, st = build_training(cfg, torch.device("cpu"))
    fit(cfg, st, batches_for(cfg, ds))
    return cfg, st


def _flat(sd, prefix=""):
    out = {}
    items = sd.items() if isinstance(sd, dict) else enumerate(sd) if isinstance(sd, list) else None
    if items is None:
        return {prefix: sd}
    for k, v in items:
        out.update(_flat(v, f"{prefix}/{k}"))
    return out


@pytest.mark.parametrize("overrides", [(), ("model.name=cdcgan", "model.spectral_norm=true", "loss.name=hinge")])
def test_round_trip_restores_every_tensor_and_number(tmp_path, overrides):
    cfg, st = _trained_state(overrides)
    ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / "c", DataMeta((1, 16, 16)))
    _, fresh = build_training(cfg, torch.device("cpu"))
    loaded, manifest = ckpt.load_checkpoint(tmp_path / "c")
    fresh.load_state_dict(loaded)
    a, b = _flat(st.state_dict()), _flat(fresh.state_dict())
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k
    assert manifest["step"] == 2 and manifest["config_hash"] == cfg.hash()
    assert isinstance(next(iter(fresh.opt_g.state)), torch.Tensor)  # optimizer state keyed by the live params


def test_the_gan_steps_values_load_from_checkpoints_before_and_after_they_were_typed(tmp_path):
    """GANState keeps the dict a checkpoint has always held ({} in ganflow 0.1.0, a few keys later);
    a key it does not know is refused, not dropped."""
    cfg, st = _trained_state(("model.name=stylegan2", "model.ngf=2", "model.ndf=2", "model.mapping_layers=1",
                              "train.augment=translation", "train.augment_p=adaptive", "loss.pl_weight=2"), steps=1)
    saved = st.state_dict()
    assert set(saved["gan"]) == {"augment_p", "ada_sum", "pl_mean"} and saved["gan"]["pl_mean"] > 0
    _, fresh = build_training(cfg, torch.device("cpu"))
    for older, want in (({}, 0.0), ({"pl_mean": 0.25}, 0.25)):
        fresh.load_state_dict({**saved, "gan": older})
        assert fresh.gan.pl_mean == want and fresh.gan.augment_p == 0.0
    fresh.load_state_dict({k: v for k, v in saved.items() if k != "gan"})  # ganflow 0.1.0: no "gan" at all
    assert fresh.gan.state_dict() == {"augment_p": 0.0, "ada_sum": 0.0, "pl_mean": 0.0}
    with pytest.raises(ValueError, match="unknown GAN step values \\['p_aug'\\]"):
        fresh.load_state_dict({**saved, "gan": {"p_aug": 0.5}})


def test_corrupted_file_is_refused_with_a_clear_error(tmp_path):
    cfg, st = _trained_state()
    d = ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / "c")
    blob = bytearray((d / "G.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (d / "G.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ckpt.CheckpointError, match="sha256 mismatch"):
        ckpt.load_checkpoint(d)


def test_resume_skips_incomplete_and_corrupt_checkpoints(tmp_path, caplog):
    cfg, st = _trained_state()
    run = tmp_path / "run"
    good = ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), run / "checkpoints" / "step_00000002")
    st.step = 4
    bad = ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), run / "checkpoints" / "step_00000004")
    (bad / "D.safetensors").write_bytes(b"garbage")
    half = run / "checkpoints" / "step_00000006"  # files but no manifest: an interrupted write
    half.mkdir()
    (half / "G.safetensors").write_bytes((good / "G.safetensors").read_bytes())
    path, state, _ = ckpt.load_latest_from(LocalStore(run), "", tmp_path / "cache")
    assert Path(path) == good and state["step"] == 2
    assert ckpt.latest_valid_checkpoint(run) == good
    assert "step_00000004" in caplog.text and "sha256 mismatch" in caplog.text


def test_manifest_is_plain_json_without_pickles(tmp_path):
    cfg, st = _trained_state()
    d = ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / "c")
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(manifest["files"]) == {f"{k}.safetensors" for k in ("G", "D", "G_ema", "opt_g", "opt_d", "rng")}
    assert manifest["config"]["train"]["batch_size"] == 8


# --- the same checkpoints in a bucket on a real loopback S3 server ---


def _s3_store(s3, prefix="team/runs"):
    from ganflow.store import S3Options, S3Store

    endpoint, bucket = s3
    return S3Store(f"s3://{bucket}/{prefix}", S3Options(endpoint_url=endpoint))


def _publish_steps(store, tmp_path, run_key, steps):
    cfg, st = _trained_state()
    for s in steps:
        st.step = s
        local = ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / f"local_{s}")
        ckpt.publish_to(store, local, f"{run_key}/checkpoints/{RunLayout.step_name(s)}")
    return st


def test_a_checkpoint_in_s3_round_trips_and_its_manifest_is_written_last(s3, tmp_path):
    import boto3

    store = _s3_store(s3)
    uploaded = []  # object keys in the order their upload started
    for op in ("PutObject", "CreateMultipartUpload"):
        store.client.meta.events.register(f"before-parameter-build.s3.{op}", lambda params, **_: uploaded.append(params["Key"]))
    st = _publish_steps(store, tmp_path, "exp/run", [10])
    uri, state, manifest = ckpt.load_latest_from(store, "exp/run", tmp_path / "cache")
    assert uri == store.uri("exp/run/checkpoints/step_00000010") and manifest["step"] == 10
    assert all(torch.equal(state["G"][k], v) for k, v in st.G.state_dict().items())
    assert uploaded[-1].endswith("/manifest.json") and len(uploaded) == len(manifest["files"]) + 1
    endpoint, bucket = s3
    objs = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix="team/runs/exp/run/checkpoints/step_00000010/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in objs) == sorted(["manifest.json", *manifest["files"]])


def test_a_corrupted_object_is_refused_and_resume_falls_back_to_the_previous_checkpoint(s3, tmp_path, caplog):
    import boto3

    store = _s3_store(s3)
    _publish_steps(store, tmp_path, "exp/run", [10, 20])
    endpoint, bucket = s3
    key = "team/runs/exp/run/checkpoints/step_00000020/D.safetensors"
    client = boto3.client("s3", endpoint_url=endpoint)
    blob = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    blob[-1] ^= 0xFF  # one flipped byte, behind ganflow's back
    client.put_object(Bucket=bucket, Key=key, Body=bytes(blob))

    with pytest.raises(ckpt.CheckpointError, match="sha256 mismatch"):
        ckpt.load_checkpoint(ckpt.fetch(store, "exp/run/checkpoints/step_00000020", tmp_path / "c1"))
    with caplog.at_level("WARNING"):
        uri, _, manifest = ckpt.load_latest_from(store, "exp/run", tmp_path / "c2")
    assert manifest["step"] == 10 and uri.endswith("step_00000010")
    assert "refusing checkpoint s3://" in caplog.text and "step_00000020" in caplog.text and "falling back" in caplog.text


def test_a_checkpoint_without_its_manifest_in_s3_is_never_picked(s3, tmp_path):
    store = _s3_store(s3)
    _publish_steps(store, tmp_path, "exp/run", [10])
    store.put_bytes("exp/run/checkpoints/step_00000030/G.safetensors", b"half of an upload")
    uri, _, manifest = ckpt.load_latest_from(store, "exp/run", tmp_path / "cache")
    assert manifest["step"] == 10


def test_a_file_whose_checksum_matches_but_that_does_not_parse_is_refused_and_resume_falls_back(tmp_path, caplog):
    """Issue 30, fault 12: a SafetensorError was a traceback, not a fallback."""
    store = LocalStore(tmp_path / "runs")
    _publish_steps(store, tmp_path, "exp/run", [10, 20])
    newest = tmp_path / "runs/exp/run/checkpoints/step_00000020"
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}"
    (newest / "D.safetensors").write_bytes(garbage)
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest["files"]["D.safetensors"] = ckpt.sha256(garbage)
    (newest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors file"):
        ckpt.load_checkpoint(newest)
    with caplog.at_level("WARNING"):
        uri, _, manifest = ckpt.load_latest_from(store, "exp/run", tmp_path / "cache")
    assert manifest["step"] == 10 and "falling back" in caplog.text


def test_a_torn_metrics_line_is_skipped_with_a_warning_and_dropped_by_the_next_resume(tmp_path, caplog):
    """Issue 30, fault 6: one line cut short by a full disk broke every resume and `runs list`."""
    from ganflow.run.run import Run
    from tests.conftest import cli_here

    run = Run.create(str(tmp_path / "runs"), "exp")
    run.write_config("name: exp\n")
    for step in (10, 20, 30):
        run.append_metrics({"step": step, "loss/d": 1.0})
    run.flush_metrics()
    metrics = Path(run.uri) / RunLayout.METRICS
    metrics.write_text(metrics.read_text() + '{"step": 40, "loss/d": 0.')
    with caplog.at_level("WARNING"):
        assert [r["step"] for r in Run.open(run.uri).read_metrics()] == [10, 20, 30]
    assert "skipped 1 torn line" in caplog.text
    assert Run.open(run.uri).truncate_metrics(20) == 30
    assert metrics.read_text().count("\n") == 2 and "0." not in metrics.read_text().splitlines()[-1][-3:]
    listed = cli_here("runs", "list", str(tmp_path / "runs"))
    assert listed.returncode == 0, listed.stderr


def test_a_resume_that_would_change_the_networks_is_refused_with_every_byte_of_the_run_kept(tmp_path):
    """Issue 30, fault 5: `--resume RUN model.ngf=16` rewrote config.yaml and status.json, then failed
    in the workers, and every later plain resume failed the same way."""
    from ganflow.run.run import Run
    from tests.conftest import cli_here

    from tests.conftest import JOBS

    cfg = load_job(JOBS / "quickstart.yaml", [f"storage.uri={tmp_path}"])
    run = Run.create(str(tmp_path), cfg.name)
    run.write_config(cfg.to_yaml())
    run.write_status("stopped")
    before = {p.name: p.read_bytes() for p in Path(run.uri).iterdir()}
    for override, key in (("model.ngf=16", "model.ngf"), ("data.resolution=16", "data.resolution")):
        proc = cli_here("train", "--resume", run.uri, override, "train.steps=1")  # were it to start: 1 step
        assert proc.returncode == 2 and f"config: {key}: the run was trained with" in proc.stderr, proc.stderr
        assert {p.name: p.read_bytes() for p in Path(run.uri).iterdir()} == before
