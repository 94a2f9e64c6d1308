"""A run location: one run's files in a Store rooted at `<storage.uri>/<experiment>/<run_id>`,
a local directory or `s3://bucket/prefix/...`; and finding runs under a storage root.

Layout (a contract, see README): config.yaml, metrics.jsonl, status.json,
samples/step_<8 digits>.png, checkpoints/step_<8 digits>/{manifest.json, *.safetensors}.
Ray Train keeps its own bookkeeping beside them (checkpoint_manager_snapshot.json,
.validate_storage_marker), pointed at the same location so its restore and ours agree.

Only rank 0 of a training job writes. In a bucket, metrics.jsonl is uploaded whole, at most every
METRICS_FLUSH_S seconds and at every checkpoint and status change, so a reader never sees it
half-written and never more than that stale.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ganflow import checkpoint as ckpt
from ganflow.objectstore import LocalStore, NotFound, S3Options, Store, is_s3, join, open_store, pyarrow_s3
from ganflow.storage import CONFIG_FILE, METRICS_FILE, STATUS_FILE, new_run_id

METRICS_FLUSH_S = 10.0
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"


def store_options(storage_cfg) -> S3Options:
    """S3Options from a StorageConfig (`cfg.storage`)."""
    return S3Options(endpoint_url=storage_cfg.endpoint_url, region=storage_cfg.region,
                     retry_mode=storage_cfg.retry_mode, max_attempts=storage_cfg.max_attempts)


class Run:
    """One run's files. `Run.create` makes a new location, `Run.open` an existing one."""

    def __init__(self, store: Store, options: S3Options = S3Options()):
        self.store, self.options = store, options
        self._metrics: Optional[List[str]] = None  # a bucket's metrics.jsonl, lines held in memory
        self._metrics_flushed = time.monotonic()

    @classmethod
    def open(cls, uri: str | os.PathLike, options: S3Options = S3Options()) -> "Run":
        return cls(open_store(str(uri).rstrip("/") if is_s3(uri) else uri, options), options)

    @classmethod
    def create(cls, storage_uri: str, experiment: str, options: S3Options = S3Options()) -> "Run":
        if is_s3(storage_uri):
            return cls.open(f"{storage_uri.rstrip('/')}/{experiment}/{new_run_id()}", options)
        return cls.open(Path(storage_uri).expanduser().resolve() / experiment / new_run_id(), options)

    @property
    def uri(self) -> str:
        return self.store.uri()

    @property
    def id(self) -> str:
        """The run id: the location's last path component (also the W&B run id)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def is_local(self) -> bool:
        return isinstance(self.store, LocalStore)

    def __str__(self) -> str:
        return self.uri

    # --- config and status ---

    def write_config(self, yaml_text: str) -> None:
        self.store.put_bytes(CONFIG_FILE, yaml_text.encode())

    def read_config(self) -> str:
        return self.store.get_bytes(CONFIG_FILE).decode()

    def write_status(self, status: str, **extra: Any) -> None:
        self.flush_metrics()
        self.store.put_bytes(STATUS_FILE, json.dumps({"status": status, "time": time.time(), **extra}).encode())

    def read_status(self) -> Dict[str, Any]:
        try:
            return json.loads(self.store.get_bytes(STATUS_FILE))
        except NotFound:
            return {}

    # --- metrics.jsonl ---

    def append_metrics(self, record: Dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        if self.is_local:
            with open(self.store.path / METRICS_FILE, "a") as f:
                f.write(line)
            return
        self._metric_lines().append(line)
        if time.monotonic() - self._metrics_flushed >= METRICS_FLUSH_S:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._metrics is not None:
            self.store.put_bytes(METRICS_FILE, "".join(self._metrics).encode())
            self._metrics_flushed = time.monotonic()

    def _metric_lines(self) -> List[str]:
        if self._metrics is None:
            try:
                text = self.store.get_bytes(METRICS_FILE).decode()
            except NotFound:
                text = ""
            self._metrics = text.splitlines(keepends=True)
        return self._metrics

    def read_metrics(self) -> List[Dict[str, Any]]:
        if self.is_local:
            path = self.store.path / METRICS_FILE
            lines = path.read_text().splitlines() if path.is_file() else []
        else:
            lines = self._metric_lines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, last_step: int) -> int:
        """Drop records logged after `last_step`, so a resumed run never repeats a step; returns
        the last step that had been logged before (how far a cut-short attempt got)."""
        records = self.read_metrics()
        kept = [json.dumps(r) + "\n" for r in records if r["step"] <= last_step]
        if self.is_local:
            self.store.put_bytes(METRICS_FILE, "".join(kept).encode())
        else:
            self._metrics = kept
            self.flush_metrics()
        return max((r["step"] for r in records), default=0)

    # --- samples and checkpoints ---

    def put_sample(self, step: int, png: bytes) -> None:
        self.store.put_bytes(f"{SAMPLES_DIR}/step_{step:08d}.png", png)

    def publish_checkpoint(self, local_dir: Path, step: int) -> str:
        """Make a finished checkpoint visible (files first, manifest last); returns its URI."""
        self.flush_metrics()  # the bucket's metrics are never behind its newest checkpoint
        return ckpt.publish_to(self.store, local_dir, checkpoint_key(step))

    def adopt_checkpoint(self, uri: str) -> str:
        """Copy checkpoint `uri` of another run in as this run's own, at the same step, so that
        this run starts where that one was (PBT's exploit); the source is left as it was."""
        source_run, _, name = uri.rstrip("/").rpartition(f"/{CHECKPOINTS_DIR}/")
        if not source_run or not name.startswith("step_"):
            raise ckpt.CheckpointError(f"{uri}: not a checkpoint location (<run>/{CHECKPOINTS_DIR}/step_N)")
        source = Run.open(source_run, self.options)
        with tempfile.TemporaryDirectory(prefix="ganflow-adopt-") as tmp:
            fetched = ckpt.fetch(source.store, f"{CHECKPOINTS_DIR}/{name}", Path(tmp))  # locally: in place
            return self.publish_checkpoint(fetched, int(name.rsplit("_", 1)[1]))  # copies

    def checkpoints(self) -> List[str]:
        """Checkpoint keys, newest first (complete or not)."""
        return ckpt.list_checkpoints_in(self.store, "")

    def load_latest_checkpoint(self, prefer: Optional[str] = None) -> Optional[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        """(uri, state, manifest) of checkpoint key `prefer` if intact, else of the newest intact one."""
        with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as cache:
            return ckpt.load_latest_from(self.store, "", Path(cache), prefer)

    # --- Ray Train's view of the same location ---

    def ray_storage(self) -> Tuple[str, str, Any]:
        """(storage_path, name, storage_filesystem) for `ray.train.RunConfig`."""
        if self.is_local:
            return str(self.store.path.parent), self.store.path.name, None
        path = f"{self.store.bucket}/{self.store.prefix}"
        parent, name = path.rsplit("/", 1)
        return parent, name, pyarrow_s3(self.options)

    def ray_checkpoint(self, key: str):
        """A `ray.train.Checkpoint` naming checkpoint `key` where Ray's storage sees it."""
        import ray.train

        if self.is_local:
            return ray.train.Checkpoint(path=self.store.uri(key))
        return ray.train.Checkpoint(path=f"{self.store.bucket}/{join(self.store.prefix, key)}", filesystem=pyarrow_s3(self.options))


def checkpoint_key(step: int) -> str:
    return f"{CHECKPOINTS_DIR}/{ckpt.step_dir_name(step)}"


def checkpoint_key_of(path: str) -> str:
    """Our key for a checkpoint path Ray hands back (local path or bucket/prefix/.../step_X)."""
    return f"{CHECKPOINTS_DIR}/{path.rstrip('/').rsplit('/', 1)[-1]}"


# --- finding runs ---


def find_runs(store: Store, max_depth: int = 2) -> List[str]:
    """Keys of the runs (locations holding config.yaml) at `store`'s root, or up to `max_depth`
    levels below it (a storage root holds experiments, which hold runs)."""
    if store.exists(CONFIG_FILE):
        return [""]
    found, level = [], [""]
    for _ in range(max_depth):
        below = [join(key, d) for key in level for d in store.list_dirs(key)]
        for key in below:
            if store.exists(join(key, CONFIG_FILE)):
                found.append(key)
        level = [k for k in below if k not in found]
    return sorted(found)


def summarize(run: Run) -> Dict[str, Any]:
    """What `ganflow runs list` shows for one run: status, step, latest checkpoint and metrics."""
    status = run.read_status()
    metrics = run.read_metrics()
    latest = metrics[-1] if metrics else {}
    checkpoints = run.checkpoints()
    return {
        "run": run.uri,
        "status": status.get("status", "unknown"),
        "step": int(latest.get("step", status.get("step", 0))),
        "checkpoint_step": int(checkpoints[0].rsplit("_", 1)[-1]) if checkpoints else None,
        "updated": status.get("time"),
        "metrics": {k: v for k, v in latest.items() if k != "step"},
    }


def list_runs(location: str, options: S3Options = S3Options()) -> List[Dict[str, Any]]:
    root = open_store(location.rstrip("/") if is_s3(location) else location, options)
    runs = []
    for key in find_runs(root):
        store = root if not key else open_store(root.uri(key), options)
        runs.append(summarize(Run(store, options)))
    return runs
