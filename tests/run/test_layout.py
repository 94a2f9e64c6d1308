"""RunLayout and SweepLayout are the location contracts other tools script against (README "Run layout")."""

from __future__ import annotations

import pytest

from ganflow.run.layout import RunLayout, SweepLayout


def test_run_layout_names_the_contract_paths():
    assert (RunLayout.CONFIG, RunLayout.METRICS, RunLayout.STATUS) == ("config.yaml", "metrics.jsonl", "status.json")
    assert RunLayout.sample(500) == "samples/step_00000500.png"
    assert RunLayout.checkpoint(40) == "checkpoints/step_00000040"
    assert RunLayout.checkpoint_of("bucket/runs/exp/r1/checkpoints/step_00000040") == "checkpoints/step_00000040"
    assert RunLayout.step_of("s3://b/runs/exp/r1/checkpoints/step_00000040/") == 40


def test_a_checkpoint_uri_splits_into_its_run_and_key_and_anything_else_is_refused():
    assert RunLayout.split_checkpoint("s3://b/runs/exp/r1/checkpoints/step_00000040") == (
        "s3://b/runs/exp/r1", "checkpoints/step_00000040")
    for bad in ("s3://b/runs/exp/r1", "/runs/exp/r1/checkpoints/latest", "/runs/r1/checkpoints/step_1/G.safetensors"):
        with pytest.raises(ValueError, match="not a checkpoint location"):
            RunLayout.split_checkpoint(bad)


def test_sweep_layout_names_the_contract_paths_and_resume_finds_the_key_from_a_location():
    key = SweepLayout.new_key("lr")
    assert key.startswith("sweeps/lr-") and SweepLayout.key_of(f"s3://b/runs/{key}/") == key
    assert SweepLayout.key_of(f"/home/u/runs/{key}") == key
    assert (SweepLayout.SPEC, SweepLayout.RESULTS, SweepLayout.BEST) == ("sweep.yaml", "results.jsonl", "best.yaml")
    assert SweepLayout.trial_log("abc_00001") == "trials/abc_00001.jsonl"
