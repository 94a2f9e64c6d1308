"""Run locations: `<storage.uri>/<experiment>/<run_id>/` on a local (or shared) filesystem.

Layout (fixed contract, see README): config.yaml, metrics.jsonl, samples/step_<8 digits>.png,
checkpoints/step_<8 digits>/{manifest.json, *.safetensors}. Writes are atomic (temp + rename).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def new_run_dir(storage_uri: str, experiment: str) -> Path:
    return Path(storage_uri).expanduser().resolve() / experiment / new_run_id()


TEMP_MARK = ".tmp-"  # in the names of files still being written; listings skip them


def replace_atomically(path: Path, fill: Callable[[Path], Any]) -> None:
    """`fill(tmp)` writes a temporary file beside `path`, which is then renamed over it: readers see
    the old file or the whole new one. A failed fill leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}"
    try:
        fill(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_bytes(data.encode() if isinstance(data, str) else data))


def copy_atomic(src: Path, path: Path) -> None:
    replace_atomically(path, lambda tmp: shutil.copyfile(src, tmp))


def append_metrics(run_dir: Path, record: Dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> List[Dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop records logged after `last_step`, so a resumed run never repeats a step."""
    records = [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    write_atomic(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    write_atomic(Path(run_dir) / STATUS_FILE, json.dumps({"status": status, "time": time.time(), **extra}))
