"""A run location: one run's files (as `RunLayout` places them) in a Store rooted at
`<storage.uri>/<experiment>/<run_id>`, a local directory or `s3://bucket/prefix/...`; and finding
runs under a storage root.

Only rank 0 of a training job writes. Where appending is not cheap (a bucket), metrics.jsonl is
uploaded whole, at most every METRICS_FLUSH_S seconds and at every checkpoint and status change,
so a reader never sees it half-written and never more than that stale.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ganflow.run import checkpoint as ckpt
from ganflow.run.layout import RunLayout
from ganflow.store import NotFound, S3Options, Store, join, open_store

logger = logging.getLogger(__name__)

METRICS_FLUSH_S = 10.0
HEARTBEAT = "time"  # each metrics.jsonl record's wall time (seconds since the epoch), written with it


class Run:
    """One run's files. `Run.create` makes a new location, `Run.open` an existing one."""

    def __init__(self, store: Store, options: S3Options = S3Options()):
        self.store, self.options = store, options
        self._metrics: Optional[List[str]] = None  # a bucket's metrics.jsonl, lines held in memory
        self._metrics_flushed = time.monotonic()

    @classmethod
    def open(cls, uri: str | os.PathLike, options: S3Options = S3Options()) -> "Run":
        return cls(open_store(uri, options), options)

    @classmethod
    def create(cls, storage_uri: str, experiment: str, options: S3Options = S3Options()) -> "Run":
        root = open_store(storage_uri, options)
        return cls(open_store(root.uri(RunLayout.run_key(experiment, RunLayout.new_run_id())), options), options)

    @property
    def uri(self) -> str:
        return self.store.uri()

    @property
    def id(self) -> str:
        """The run id: the location's last path component (also the W&B run id)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.uri

    # --- config and status ---

    def write_config(self, yaml_text: str) -> None:
        self.store.put_bytes(RunLayout.CONFIG, yaml_text.encode())

    def read_config(self) -> str:
        return self.store.get_bytes(RunLayout.CONFIG).decode()

    def write_status(self, status: str, **extra: Any) -> None:
        self.flush_metrics()
        self.store.put_bytes(RunLayout.STATUS, json.dumps({"status": status, "time": time.time(), **extra}).encode())

    def read_status(self) -> Dict[str, Any]:
        try:
            return json.loads(self.store.get_bytes(RunLayout.STATUS))
        except NotFound:
            return {}

    # --- metrics.jsonl ---

    def append_metrics(self, record: Dict[str, Any]) -> None:
        """One record, stamped with the wall time: the run's heartbeat."""
        line = json.dumps({**record, HEARTBEAT: round(time.time(), 3)}) + "\n"
        if self.store.cheap_appends:
            self.store.append_bytes(RunLayout.METRICS, line.encode())
            return
        self._metric_lines().append(line)
        if time.monotonic() - self._metrics_flushed >= METRICS_FLUSH_S:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._metrics is not None:
            self.store.put_bytes(RunLayout.METRICS, "".join(self._metrics).encode())
            self._metrics_flushed = time.monotonic()

    def _stored_lines(self) -> List[str]:
        try:
            return self.store.get_bytes(RunLayout.METRICS).decode().splitlines(keepends=True)
        except NotFound:
            return []

    def _metric_lines(self) -> List[str]:
        """A buffered store's lines, read once and kept in memory from then on."""
        if self._metrics is None:
            self._metrics = self._stored_lines()
        return self._metrics

    def read_metrics(self) -> List[Dict[str, Any]]:
        """The records; a line that does not parse (a write cut short by a full disk or a kill) is
        skipped with one warning, and the next `truncate_metrics` (every resume) drops it."""
        lines = self._stored_lines() if self.store.cheap_appends else self._metric_lines()
        records, torn = [], 0
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
            else:
                torn += 1
        if torn:
            logger.warning("%s: skipped %d torn line(s) of %s", self.uri, torn, RunLayout.METRICS)
        return records

    def truncate_metrics(self, last_step: int) -> int:
        """Drop records logged after `last_step`, so a resumed run never repeats a step; returns
        the last step that had been logged before (how far a cut-short attempt got)."""
        records = self.read_metrics()
        kept = [json.dumps(r) + "\n" for r in records if r["step"] <= last_step]
        self.store.put_bytes(RunLayout.METRICS, "".join(kept).encode())
        self._metrics = None if self.store.cheap_appends else kept
        self._metrics_flushed = time.monotonic()
        return max((r["step"] for r in records), default=0)

    # --- samples and checkpoints ---

    def samples(self) -> List[Tuple[int, str]]:
        """(step, key) of the run's sample grids, in step order."""
        keys = [k for k in self.store.list(RunLayout.SAMPLES) if k.endswith(".png")]
        steps = []
        for key in keys:
            try:
                steps.append((RunLayout.step_of(key.removesuffix(".png")), key))
            except ValueError:  # not one of ours
                continue
        return sorted(steps)

    def put_sample(self, step: int, png: bytes) -> None:
        self.store.put_bytes(RunLayout.sample(step), png)

    def publish_checkpoint(self, local_dir: Path, step: int) -> str:
        """Make a finished checkpoint visible (files first, manifest last); returns its URI."""
        self.flush_metrics()  # the bucket's metrics are never behind its newest checkpoint
        return ckpt.publish_to(self.store, local_dir, RunLayout.checkpoint(step))

    def adopt_checkpoint(self, uri: str) -> str:
        """Copy checkpoint `uri` of another run in as this run's own, at the same step, so that
        this run starts where that one was (PBT's exploit); the source is left as it was."""
        try:
            source_run, key = RunLayout.split_checkpoint(uri)
        except ValueError as err:
            raise ckpt.CheckpointError(str(err)) from None
        source = Run.open(source_run, self.options)
        with tempfile.TemporaryDirectory(prefix="ganflow-adopt-") as tmp:
            fetched = ckpt.fetch(source.store, key, Path(tmp))  # locally: in place
            return self.publish_checkpoint(fetched, RunLayout.step_of(key))  # copies

    def checkpoints(self) -> List[str]:
        """Complete checkpoint keys, newest first."""
        return ckpt.list_checkpoints_in(self.store, "")

    def remove_leftovers(self) -> List[str]:
        """What a writer that was stopped or killed left half-written (partial folders, temporary
        files, checkpoint uploads without their manifest), removed; their names. Only for the
        holder of the run's lease."""
        removed = self.store.remove_leftovers(RunLayout.CHECKPOINTS)
        for key in ckpt.incomplete_checkpoints_in(self.store, ""):
            self.store.delete_prefix(key)
            removed.append(key)
        return removed

    def load_latest_checkpoint(self, prefer: Optional[str] = None) -> Optional[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        """(uri, state, manifest) of checkpoint key `prefer` if intact, else of the newest intact one."""
        with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as cache:
            return ckpt.load_latest_from(self.store, "", Path(cache), prefer)

    # --- Ray Train's view of the same location ---

    def ray_storage(self) -> Tuple[str, str, Any]:
        """(storage_path, name, storage_filesystem) for `ray.train.RunConfig`: Ray's run directory is this run's location."""
        path, filesystem = self.store.ray_path()
        parent, name = path.rsplit("/", 1)
        return parent, name, filesystem


# --- finding runs ---


def find_runs(store: Store, max_depth: int = 2) -> List[str]:
    """Keys of the runs (locations holding config.yaml) at `store`'s root, or up to `max_depth`
    levels below it (a storage root holds experiments, which hold runs)."""
    if store.exists(RunLayout.CONFIG):
        return [""]
    found, level = [], [""]
    for _ in range(max_depth):
        below = [join(key, d) for key in level for d in store.list_dirs(key)]
        for key in below:
            if store.exists(join(key, RunLayout.CONFIG)):
                found.append(key)
        level = [k for k in below if k not in found]
    return sorted(found)


# A running run's heartbeat is its newest metrics record (each carries its wall time) or status
# change; silent for longer than this, its driver is taken for dead.
STALE_AFTER_S = 600.0


def summarize(run: Run, now: Optional[float] = None, stale_after: float = STALE_AFTER_S) -> Dict[str, Any]:
    """What `ganflow runs list` shows for one run: status (`stale` for a `running` run whose
    heartbeat stopped), step, latest checkpoint and metrics, and every metrics record."""
    status = run.read_status()
    records = run.read_metrics()
    latest = records[-1] if records else {}
    checkpoints = run.checkpoints()
    heartbeat = max(latest.get(HEARTBEAT, 0.0), status.get("time") or 0.0) or None
    state = status.get("status", "unknown")
    if state == "running" and heartbeat is not None and (now or time.time()) - heartbeat > stale_after:
        state = "stale"
    return {
        "run": run.uri,
        "status": state,
        "step": int(latest.get("step", status.get("step", 0))),
        "checkpoint_step": RunLayout.step_of(checkpoints[0]) if checkpoints else None,
        "updated": status.get("time"),
        "heartbeat": heartbeat,
        "metrics": {k: v for k, v in latest.items() if k not in ("step", HEARTBEAT)},
        "records": records,
    }


def list_runs(location: str, options: S3Options = S3Options()) -> List[Dict[str, Any]]:
    root = open_store(location, options)
    runs = []
    for key in find_runs(root):
        store = root if not key else open_store(root.uri(key), options)
        runs.append(summarize(Run(store, options)))
    return runs
