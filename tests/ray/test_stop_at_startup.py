"""A SIGTERM while the in-process Ray is starting (issue 30, fault 12): Ray's start-up handler
exits with 15, which left status.json `running` and whatever Ray had started. Now the run is
marked stopped, its lease released, and the command ends as a stop does (exit 130). Forced
deterministically: the local Ray start is the signal's moment (the handler Ray installs, then the
signal), so no Ray is started at all."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from ganflow.ray import cluster
from ganflow.run.lease import Holder
from tests.conftest import JOBS, cli_here


def test_a_sigterm_inside_ray_start_up_marks_the_run_stopped_and_exits_as_a_stop(tmp_path, monkeypatch):
    def sigterm_inside_ray_init(*_):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # ray.init's own, as Ray 2.60 sets it
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cluster, "ensure_ray", sigterm_inside_ray_init)  # even where a test before left a Ray up
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    proc = cli_here("train", str(JOBS / "ring.yaml"), "train.steps=1", f"storage.uri={tmp_path}",
                    "tracking.wandb.mode=disabled")
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "ganflow: error: interrupted"
    (run,) = Path(tmp_path, "ring").iterdir()
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    assert Holder.parse((run / "lease.json").read_bytes()).released
