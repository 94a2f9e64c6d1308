"""RunLayout: the one owner of where everything of a run lives (a contract: see README).

    <storage.uri>/<experiment>/<run_id>/
      config.yaml, metrics.jsonl, status.json, lease.json
      samples/step_<8 digits>.png
      checkpoints/step_<8 digits>/{manifest.json, *.safetensors}

Keys are relative to the run's location. Ray Train keeps its own bookkeeping beside them
(checkpoint_manager_snapshot.json, .validate_storage_marker), pointed at the same location so its
restore and ours agree.

SweepLayout: the same for a sweep (its trials' runs are ordinary runs under the job's experiment).

    <storage.uri>/sweeps/<name>-<time>/
      sweep.yaml, results.jsonl, results.csv, best.yaml, best.json
      trials/<trial_id>.jsonl
      tune/  (Ray Tune's experiment state, what `--resume` restores)
"""

from __future__ import annotations

import secrets
import time
from typing import Tuple


class RunLayout:
    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    STATUS = "status.json"
    LEASE = "lease.json"  # who writes the run now (run/lease.py)
    SAMPLES = "samples"
    CHECKPOINTS = "checkpoints"
    MANIFEST = "manifest.json"  # inside a checkpoint: written last, so a checkpoint without one is incomplete
    STEP_PREFIX = "step_"

    @staticmethod
    def new_run_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)

    @staticmethod
    def run_key(experiment: str, run_id: str) -> str:
        return f"{experiment}/{run_id}"

    @classmethod
    def step_name(cls, step: int) -> str:
        return f"{cls.STEP_PREFIX}{step:08d}"

    @classmethod
    def sample(cls, step: int) -> str:
        return f"{cls.SAMPLES}/{cls.step_name(step)}.png"

    @classmethod
    def checkpoint(cls, step: int) -> str:
        return f"{cls.CHECKPOINTS}/{cls.step_name(step)}"

    @classmethod
    def checkpoint_of(cls, path: str) -> str:
        """Our key for a checkpoint path Ray hands back (a local path or bucket/prefix/.../step_N)."""
        return f"{cls.CHECKPOINTS}/{path.rstrip('/').rsplit('/', 1)[-1]}"

    @classmethod
    def is_checkpoint_name(cls, name: str) -> bool:
        return name.startswith(cls.STEP_PREFIX)

    @classmethod
    def step_of(cls, key: str) -> int:
        """The step of a checkpoint key, URI or directory name (`.../step_00000040` -> 40)."""
        return int(key.rstrip("/").rsplit("/", 1)[-1].removeprefix(cls.STEP_PREFIX))

    @classmethod
    def split_checkpoint(cls, uri: str) -> Tuple[str, str]:
        """`<run>/checkpoints/step_N` -> (`<run>`, `checkpoints/step_N`); ValueError for anything else."""
        run, _, name = uri.rstrip("/").rpartition(f"/{cls.CHECKPOINTS}/")
        if not run or not cls.is_checkpoint_name(name) or "/" in name:
            raise ValueError(f"{uri}: not a checkpoint location (<run>/{cls.CHECKPOINTS}/{cls.STEP_PREFIX}N)")
        return run, f"{cls.CHECKPOINTS}/{name}"


class SweepLayout:
    ROOT = "sweeps"
    SPEC = "sweep.yaml"  # the spec as run (absolute paths), what `--resume` reads back
    RESULTS = "results.jsonl"
    RESULTS_CSV = "results.csv"
    BEST = "best.yaml"  # the winning job, ready to train
    BEST_JSON = "best.json"
    TRIALS = "trials"
    TUNE = "tune"

    @classmethod
    def new_key(cls, name: str) -> str:
        return f"{cls.ROOT}/{name}-{time.strftime('%Y%m%d-%H%M%S')}"

    @classmethod
    def key_of(cls, location: str) -> str:
        """The sweep's key in its storage, from the location `--resume` names (a folder or s3:// prefix)."""
        return f"{cls.ROOT}/{location.rstrip('/').rsplit('/', 1)[-1]}"

    @classmethod
    def trial_log(cls, trial_id: str) -> str:
        return f"{cls.TRIALS}/{trial_id}.jsonl"
