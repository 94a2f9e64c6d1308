"""W&B tracking with the real wandb in offline mode, read back from its own run files: settings,
redaction, what a tracker logs, artifacts by reference, a W&B that breaks, the dashboard spec."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import torch

from ganflow.run import checkpoint as ckpt
from ganflow.run.generator import load_generator
from ganflow.config import REDACTED, redact, with_values
from ganflow.tracking.artifacts import resolve_artifact
from ganflow.tracking.settings import TrackingError, prepare, resolve
from ganflow.tracking.tracker import Tracker, open_tracker
from ganflow.config import WandbConfig
from ganflow.tracking.dashboard import build_workspace, workspace_json
from ganflow.job import load_job, build_training
from ganflow.present.pictures import grid_png
from ganflow.tracking.runfiles import offline_runs, records
from tests.conftest import run_cli

SECRET = "wandb-key-" + "Qx7" * 10  # 40 characters, like a real W&B key


def settings(tmp_path, **kw) -> dict:
    return resolve(WandbConfig(dir=str(tmp_path), mode="offline", **kw), env={}).to_dict()


def test_mode_is_offline_without_a_key_and_online_with_one():
    assert resolve(WandbConfig(), env={}).mode == "offline"
    assert resolve(WandbConfig(), env={"WANDB_API_KEY": SECRET}).mode == "online"
    assert resolve(WandbConfig(), env={"WANDB_API_KEY": SECRET, "WANDB_MODE": "offline"}).mode == "offline"
    assert resolve(WandbConfig(), env={"WANDB_MODE": "dryrun"}).mode == "offline"
    assert resolve(WandbConfig(mode="disabled"), env={"WANDB_API_KEY": SECRET}).mode == "disabled"
    with pytest.raises(TrackingError, match="WANDB_MODE"):
        resolve(WandbConfig(), env={"WANDB_MODE": "sometimes"})


def test_files_go_to_the_configured_dir_else_wandb_dir_else_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve(WandbConfig(), env={}).dir == str(tmp_path)
    assert resolve(WandbConfig(), env={"WANDB_DIR": "/data/wb"}).dir == "/data/wb"
    assert resolve(WandbConfig(dir="/x"), env={"WANDB_DIR": "/data/wb"}).dir == "/x"


def test_unwritable_dir_fails_at_start_or_disables_tracking_as_configured(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = load_job(None, [f"tracking.wandb.dir={blocker / 'sub'}", "tracking.wandb.mode=offline"])
    with pytest.raises(TrackingError, match=r"^tracking\.wandb\.dir: cannot write"):
        prepare(cfg)
    cfg = with_values(cfg, {"tracking.wandb.on_error": "disable"})
    with caplog.at_level(logging.WARNING, logger="ganflow.tracking"):
        assert prepare(cfg).mode == "disabled"
    assert "W&B tracking disabled: tracking.wandb.dir" in caplog.text


def test_online_without_a_reachable_server_is_one_clear_error(tmp_path, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # with a key and no WANDB_MODE, runs are online
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    import ganflow.tracking.settings

    monkeypatch.setattr(ganflow.tracking.settings, "ONLINE_CHECK_TIMEOUT_S", 3.0)
    cfg = load_job(None, [f"tracking.wandb.dir={tmp_path}"])
    with pytest.raises(TrackingError, match=r"^tracking\.wandb\.mode: online, but W&B") as err:
        prepare(cfg)
    assert SECRET not in str(err.value)
    cfg = with_values(cfg, {"tracking.wandb.on_error": "disable"})
    assert prepare(cfg).mode == "disabled"


def test_redaction_covers_secret_keys_urls_and_environment_values():
    env = {"AWS_SECRET_ACCESS_KEY": "aws-Secret-Value-123", "WANDB_API_KEY": SECRET, "HOME": "/root"}
    cfg = {"storage": {"uri": "s3://bucket/p", "endpoint_url": "http://user:pw-123@minio:9000/x"},
           "custom": {"api_token": "anything", "note": f"key is {SECRET} and aws-Secret-Value-123"}, "lr": 2e-4}
    out = redact(cfg, env=env)
    text = json.dumps(out)
    for secret in (SECRET, "aws-Secret-Value-123", "pw-123", "anything"):
        assert secret not in text
    assert out["storage"]["endpoint_url"] == "http://minio:9000/x"
    assert out["custom"]["api_token"] == REDACTED
    assert out["lr"] == 2e-4 and out["storage"]["uri"] == "s3://bucket/p"


def test_redaction_goes_by_value_for_credentials_whatever_their_name_or_length():
    """DB_PASS and OPENAI_KEY are credentials too; a short one is redacted where a value equals it,
    not inside other strings (a 7-letter word would cut paths apart)."""
    env = {"DB_PASS": "hunter2", "OPENAI_KEY": "sk-0123456789", "HOME": "/root"}
    out = redact({"group": "hunter2", "dir": "/data/hunter2s", "notes": "see sk-0123456789", "home": "/root"}, env=env)
    assert out == {"group": REDACTED, "dir": "/data/hunter2s", "notes": f"see {REDACTED}", "home": "/root"}


@pytest.fixture
def checkpoint_dirs(tmp_path):
    """Two real checkpoints of a small digits DCGAN, as a run directory holds them."""
    cfg = load_job(None, ["data.resolution=16", "model.ngf=8", "model.ndf=8", "train.batch_size=8"])
    ds, st = build_training(cfg, torch.device("cpu"))
    out = []
    for step in (10, 20):
        st.step = step
        out.append(ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / "run" / "checkpoints" / f"step_{step:08d}",
                                         ds.meta))
    return cfg, out


def test_tracker_logs_scalars_samples_and_checkpoint_references(tmp_path, checkpoint_dirs, monkeypatch):
    cfg, (c10, c20) = checkpoint_dirs
    monkeypatch.setenv("GANFLOW_CACHE", str(tmp_path / "cache"))
    wb = tmp_path / "wb"
    t = open_tracker(settings(wb, group="sweep-a", tags=["t1"]), "run-abc", cfg.to_dict(), rank=0)
    png = grid_png(torch.rand(4, 1, 16, 16) * 2 - 1)
    for step in (10, 20):
        t.log({"loss/d": 1.0 / step, "loss/g": 2.0, "step": step}, step)
        t.log_samples(png, step)
    t.log_checkpoint(str(c10), c10, 10, best=True)
    t.log_checkpoint(str(c20), c20, 20, best=False)
    t.log_generator(str(c20), c20, 20)
    t.set_summary({"final_step": 20})
    t.finish()

    (run,) = offline_runs(wb)
    assert (run.run_id, run.project, run.group, run.job_type, run.tags) == ("run-abc", "ganflow", "sweep-a", "train", ["t1"])
    assert run.config["optim"]["g"]["lr"] == cfg.optim.g.lr
    assert run.steps == [10, 20]
    assert [row["loss/d"] for row in run.history] == [0.1, 0.05]
    assert "step" not in run.history[0], "the step is W&B's _step, not a value"
    images = [row["samples.path"] for row in run.history]
    assert all((run.path / "files" / p).is_file() for p in images) and len(set(images)) == 2
    assert run.summary["final_step"] == 20 and run.exit_code == 0

    ckpts = [a for a in run.artifacts if a.type == "checkpoint"]
    assert [a.name for a in ckpts] == ["checkpoints-run-abc"] * 2
    assert set(ckpts[0].aliases) == {"latest", "step_10", "best"} and set(ckpts[1].aliases) == {"latest", "step_20"}
    assert ckpts[1].references["manifest.json"] == (c20 / "manifest.json").resolve().as_uri()
    assert ckpts[1].metadata["sha256"] == ckpt.read_manifest(c20)["files"]
    # issue 31: a local run's generator artifact holds its files (a teammate cannot reach file://)
    (gen,) = [a for a in run.artifacts if a.type == "model"]
    assert gen.name == "generator-run-abc" and gen.references == {} and set(gen.local) == {"manifest.json", "G_ema.safetensors"}
    assert gen.digests["G_ema.safetensors"] and gen.metadata["holds_files"]

    assert resolve_artifact("wandb:ganflow/checkpoints-run-abc:best", str(wb)) == str(c10)
    assert resolve_artifact("wandb:checkpoints-run-abc", str(wb)) == str(c20)  # alias latest
    before = load_generator(c20).G.state_dict()
    shutil.move(str(c20), str(tmp_path / "moved-away"))  # the run folder is gone: the artifact's own copy answers
    own = resolve_artifact("wandb:team/ganflow/generator-run-abc:latest", str(wb))
    assert Path(own).parent == tmp_path / "cache" / "wandb" and set(ckpt.read_manifest(Path(own))["files"]) == {"G_ema.safetensors"}
    after = load_generator(own).G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(TrackingError, match="no offline W&B run"):
        resolve_artifact("wandb:ganflow/checkpoints-run-abc:step_99", str(wb))
    with pytest.raises(TrackingError, match="no offline W&B run"):
        resolve_artifact("wandb:other-project/checkpoints-run-abc:best", str(wb))


def test_resumed_tracker_keeps_the_run_id_and_skips_steps_already_logged(tmp_path):
    wb = tmp_path / "wb"
    first = open_tracker(settings(wb), "run-r", {"a": 1}, rank=0)
    for step in (10, 20, 30):  # an attempt that got to 30, its last checkpoint at 20
        first.log({"loss/d": float(step)}, step)
    first.finish(failed=True)
    second = open_tracker(settings(wb), "run-r", {"a": 1}, rank=0, skip_through=30)
    for step in (30, 40):  # the resumed attempt redoes 30
        second.log({"loss/d": float(step) + 0.5}, step)
    second.finish()
    a, b = offline_runs(wb)
    assert a.run_id == b.run_id == "run-r" and b.resumed
    assert a.exit_code == 1 and b.exit_code == 0
    steps = a.steps + b.steps
    assert steps == [10, 20, 30, 40], "no step logged twice across the attempts"


def test_rows_a_killed_attempt_never_wrote_to_wandb_are_logged_by_the_next(tmp_path):
    # metrics.jsonl got to 30, but W&B's file of the killed attempt ends at 20: W&B's file wins
    wb = tmp_path / "wb"
    first = open_tracker(settings(wb), "run-k", {}, rank=0)
    for step in (10, 20):
        first.log({"loss/d": float(step)}, step)
    first.finish(failed=True)
    second = open_tracker(settings(wb), "run-k", {}, rank=0, skip_through=30)
    for step in (30, 40):
        second.log({"loss/d": float(step)}, step)
    second.finish()  # returns once W&B's file has the run's end (its service may write it a moment later)
    a, b = offline_runs(wb)
    assert a.steps + b.steps == [10, 20, 30, 40], "no gap in W&B where the killed attempt lost rows"


def test_other_ranks_and_disabled_mode_log_nothing(tmp_path):
    wb = tmp_path / "wb"
    for t in (open_tracker(settings(wb), "r", {}, rank=1),
              open_tracker({**settings(wb), "mode": "disabled"}, "r", {}, rank=0)):
        assert type(t) is Tracker
        t.log({"loss/d": 1.0}, 1)
        t.finish()
    assert not wb.exists()


def test_a_wandb_failure_mid_run_warns_once_and_training_calls_go_on(tmp_path, caplog):
    wb = tmp_path / "wb"
    t = open_tracker(settings(wb), "run-b", {}, rank=0)
    t.log({"loss/d": 1.0}, 1)
    media = t.run.dir  # W&B writes logged images here; make that impossible
    shutil.rmtree(media)
    Path(media).write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="ganflow.tracking"):
        t.log_samples(grid_png(torch.zeros(1, 1, 8, 8)), 2)  # must not raise
        t.log({"loss/d": 0.5}, 3)
        t.log_checkpoint("/nowhere", tmp_path, 3, best=True)
    assert caplog.text.count("W&B tracking stopped") == 1
    t.finish()


def test_a_torn_run_file_reads_up_to_the_tear(tmp_path):
    wb = tmp_path / "wb"
    t = open_tracker(settings(wb), "run-t", {}, rank=0)
    for step in range(1, 200):
        t.log({"loss/d": float(step)}, step)
    t.finish()
    (run,) = offline_runs(wb)
    path = next(run.path.glob("run-*.wandb"))
    whole = list(records(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    torn = list(records(path))
    assert 0 < len(torn) < len(whole) and torn == whole[: len(torn)]


def test_dashboard_workspace_has_the_team_sections_and_runs_table():
    spec = json.loads(workspace_json(build_workspace("gans", "team")))
    assert (spec["entity"], spec["project"]) == ("team", "gans")
    sections = {s["name"]: s for s in spec["spec"]["section"]["panelBankConfig"]["sections"]}
    assert list(sections) == ["Losses", "Discriminator outputs", "Samples", "Evaluation", "Throughput", "Runs"]
    text = {name: json.dumps(s) for name, s in sections.items()}
    for name, keys in {"Losses": ["loss/d", "loss/g"], "Discriminator outputs": ["d/real_logit", "d/fake_logit"],
                       "Samples": ["samples"], "Evaluation": ["eval/fid", "eval/kid", "eval/modes"],
                       "Throughput": ["throughput/imgs_per_s"], "Runs": ["optim.value.g.lr"]}.items():
        for key in keys:
            assert f'"{key}"' in text[name] or key in text[name], f"{key} missing from section {name}"
    (runset,) = spec["spec"]["section"]["runSets"]
    pinned = [c for c, on in runset["runFeed"]["columnPinned"].items() if on]
    assert {"config:optim.value.g.lr", "config:loss.value.name", "config:model.value.name", "summary:eval/fid"} <= set(pinned)


def test_dashboard_offline_writes_the_spec_file(tmp_path):
    out = tmp_path / "ws.json"
    proc = run_cli("dashboard", "gans", "--entity", "team", "--out", str(out), env={"WANDB_API_KEY": None, "WANDB_MODE": None})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "offline" in proc.stderr
    assert json.loads(out.read_text())["project"] == "gans"
    bad = run_cli("dashboard", "no spaces allowed", env={"WANDB_API_KEY": None})
    assert bad.returncode == 2 and bad.stderr.startswith("ganflow: error: PROJECT")


def test_wandb_environment_variables_fill_what_the_job_leaves_out():
    env = {"WANDB_PROJECT": "p-env", "WANDB_ENTITY": "team-env", "WANDB_RUN_GROUP": "g-env", "WANDB_TAGS": "a, b",
           "WANDB_JOB_TYPE": "eval"}
    picked = lambda s: (s.project, s.entity, s.group, s.tags, s.job_type)  # noqa: E731
    assert picked(resolve(WandbConfig(), env=env)) == ("p-env", "team-env", "g-env", ["a", "b"], "eval")
    job = WandbConfig(project="p-job", entity="team-job", group="g-job", tags=["c"], job_type="train")
    assert picked(resolve(job, env=env)) == ("p-job", "team-job", "g-job", ["c"], "train")  # the job config wins
    assert picked(resolve(WandbConfig(), env={})) == ("ganflow", None, None, [], "train")  # ganflow's defaults
    with pytest.raises(TrackingError, match="WANDB_PROJECT"):
        resolve(WandbConfig(), env={"WANDB_PROJECT": "no spaces allowed"})


def test_without_a_reader_for_wandbs_run_files_tracking_degrades_instead_of_crashing(tmp_path, monkeypatch, caplog):
    """W&B's .wandb run files are private (ganflow.tracking.runfiles, checked against wandb 0.28
    to 0.31). A wandb that drops the protobuf module the reader uses costs a warning: resume goes
    by metrics.jsonl, finish does not wait for the file, offline `wandb:` names ask to go online."""
    import sys
    import types

    from ganflow.tracking.tracker import _offline_logged_through, _wait_for_run_file

    earlier = tmp_path / "wandb" / "offline-run-20260101_000000-r1"
    earlier.mkdir(parents=True)
    (earlier / "run-r1.wandb").write_bytes(b":W&B\xe1\xbe\x00")
    current = tmp_path / "wandb" / "offline-run-20260102_000000-r1" / "files"
    current.mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "wandb.proto", None)  # as if wandb had moved it: importing it fails
    with caplog.at_level("WARNING", logger="ganflow.tracking"):
        assert _offline_logged_through(types.SimpleNamespace(dir=str(current)), "r1", fallback=40) == 40
        started = time.monotonic()
        _wait_for_run_file(earlier)
        assert time.monotonic() - started < 1.0
    assert "resume goes by metrics.jsonl" in caplog.text and "not waiting for W&B's run file" in caplog.text
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    with pytest.raises(TrackingError, match="cannot read this wandb's offline run files"):
        resolve_artifact("wandb:generator-r1:latest")
