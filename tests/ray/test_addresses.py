"""The three address forms a Ray user carries (http://HEAD:8265 for the Jobs API, HEAD:6379 for
the GCS, ray://HEAD:10001 for Ray Client) against each verb: it works, or one line, exit 2, saying
which form the verb needs, before anything is written (issue 18)."""

from __future__ import annotations

import pytest

from tests.conftest import JOBS, cli_here, run_cli
from tests.ray_head import start_head, stop_head

JOBS_API = "http://127.0.0.1:8265"


def _one_line_exit_2(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_train_and_sweep_given_a_jobs_api_address_say_which_forms_they_join_and_write_nothing(tmp_path, how):
    runs = tmp_path / "runs"
    flag, env = (["--address", JOBS_API], {"RAY_ADDRESS": None}) if how == "flag" else ([], {"RAY_ADDRESS": JOBS_API})
    where = "--address" if how == "flag" else "RAY_ADDRESS"
    line = _one_line_exit_2(cli_here("train", str(JOBS / "ring.yaml"), *flag, f"storage.uri={runs}", env=env))
    assert line.startswith(f"ganflow: error: {where} {JOBS_API}: that is a Ray Jobs API (dashboard) address")
    assert "HEAD:6379" in line and "ray://HEAD:10001" in line and f"ganflow submit JOB.yaml --address {JOBS_API}" in line
    line = _one_line_exit_2(cli_here("sweep", str(JOBS / "sweep_ring.yaml"), *flag, f"storage.uri={runs}", env=env))
    assert f"{where} {JOBS_API}: that is a Ray Jobs API" in line
    assert not runs.exists()


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "ray://127.0.0.1:10001"])
def test_submit_and_jobs_given_a_gcs_or_client_address_ask_for_the_dashboards(tmp_path, address):
    line = _one_line_exit_2(cli_here("submit", str(JOBS / "ring.yaml"), "storage.uri=s3://bucket/runs", "--address", address))
    assert line == (f"ganflow: error: --address {address}: ganflow submit and ganflow jobs talk to the Ray Jobs API on "
                    "the head's dashboard: give http://HEAD:8265 (what `ray job submit` takes)")
    line = _one_line_exit_2(cli_here("jobs", "list", env={"RAY_ADDRESS": address}))
    assert line.startswith(f"ganflow: error: RAY_ADDRESS {address}: ganflow submit and ganflow jobs talk to")


def test_synth_and_score_on_workers_given_a_jobs_api_address_say_so(tmp_path):
    from tests.conftest import trained_checkpoint

    ckpt = trained_checkpoint(tmp_path, "quickstart.yaml", steps=1)
    env = {"RAY_ADDRESS": JOBS_API}
    # a process of its own: one that has joined a Ray (the session's, in the test process) keeps it
    line = _one_line_exit_2(run_cli("synth", str(ckpt), "--num", "4", "--out", str(tmp_path / "s"), "--workers", "2", env=env))
    assert "RAY_ADDRESS http://127.0.0.1:8265: that is a Ray Jobs API" in line and "ganflow synth" in line
    line = _one_line_exit_2(run_cli("score", str(ckpt), "--data", "digits", "--out", str(tmp_path / "s.csv"),
                                    "--workers", "2", env=env))
    assert "ganflow score" in line and not (tmp_path / "s.csv").exists()


@pytest.mark.slow
def test_train_joins_a_head_started_on_loopback_at_its_gcs_address(tmp_path):
    """`ray start --head --node-ip-address=127.0.0.1`, then RAY_ADDRESS=127.0.0.1:PORT (the GCS form). A user
    saw Ray's driver give up here after ~25 s on another machine; on this one it joins (see issue 18's note)."""
    head, _ = start_head(tmp_path / "head.log")
    try:
        proc = run_cli("train", str(JOBS / "ring.yaml"), "train.steps=4", "train.log_every=2", "train.checkpoint_every=4",
                       "scaling.resources_per_worker.CPU=1", f"storage.uri={tmp_path / 'runs'}",
                       env={"RAY_ADDRESS": head.gcs_address}, timeout=300)
    finally:
        stop_head(head)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(str(tmp_path / "runs"))
