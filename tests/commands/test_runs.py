"""`ganflow runs list` and `ganflow runs show`: a run at a glance without W&B, a dead driver's run
shown as stale (issue 18)."""

from __future__ import annotations

import json
import shutil
import time

from tests.conftest import cli_here
from tests.test_renovation_guards import FIXTURE_RUN


def _copy(tmp_path, name="run-a"):
    run = tmp_path / "exp" / name
    shutil.copytree(FIXTURE_RUN, run)
    return run


def _status(run, status, age_s):
    (run / "status.json").write_text(json.dumps({"status": status, "time": time.time() - age_s}))


def test_a_running_run_whose_heartbeat_stopped_is_listed_as_stale(tmp_path):
    live, dead, done = _copy(tmp_path, "live"), _copy(tmp_path, "dead"), _copy(tmp_path, "done")
    _status(live, "running", 5)
    _status(dead, "running", 3600)  # its driver died an hour ago and never said so
    _status(done, "completed", 3600)
    proc = cli_here("runs", "list", str(tmp_path), "--json", check=True)
    rows = {r["run"].rsplit("/", 1)[-1]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert {k: r["status"] for k, r in rows.items()} == {"live": "running", "dead": "stale", "done": "completed"}
    assert time.time() - rows["dead"]["heartbeat"] > 3000
    table = cli_here("runs", "list", str(tmp_path), check=True).stdout
    assert "stale" in table and "HEARTBEAT" in table and "60m ago" in table


def test_runs_list_and_show_give_the_best_evaluation_by_the_runs_own_ranking(tmp_path):
    run = _copy(tmp_path)
    with open(run / "metrics.jsonl", "a") as f:  # cdcgan on digits ranks by FID (lower is better)
        f.write(json.dumps({"step": 2, "eval/fid": 15.0, "time": time.time()}) + "\n")
        f.write(json.dumps({"step": 4, "eval/fid": 12.5, "time": time.time()}) + "\n")
    (row,) = [json.loads(line) for line in cli_here("runs", "list", str(tmp_path), "--json", check=True).stdout.splitlines()]
    assert row["best"] == {"name": "fid", "value": 12.5, "step": 4}
    plot = tmp_path / "curves.png"
    out = cli_here("runs", "show", str(run), "--plot", str(plot), check=True).stdout
    assert "status     completed at step 4/4" in out and "cdcgan on digits 16px" in out
    assert "best       fid 12.5 at step 4" in out and f"{run}/checkpoints/step_00000004" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 2000
    (run / "samples" / "step_00000002.png").write_bytes((run / "samples" / "step_00000004.png").read_bytes())
    cli_here("runs", "show", str(run), "--plot", str(plot), check=True)
    from PIL import Image

    with Image.open(plot) as curves, Image.open(tmp_path / "curves-samples.png") as strip:  # issue 31: matplotlib, a strip
        assert curves.size[0] > 3 * 400 and strip.size[0] > 2 * strip.size[1] * 0.8  # three panels; two grids side by side
    shown = json.loads(cli_here("runs", "show", str(run), "--json", check=True).stdout)  # issue 31: --json
    assert shown["status"] == "completed" and shown["step"] == shown["steps"] == 4
    assert shown["best"] == {"name": "fid", "value": 12.5, "step": 4} and shown["job"]["model"] == "cdcgan"
    assert shown["checkpoint"] == f"{run}/checkpoints/step_00000004"


def test_runs_show_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    proc = cli_here("runs", "show", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip() == f"ganflow: error: runs show: {tmp_path} is not a run (no config.yaml there)"
