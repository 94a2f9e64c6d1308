"""Local file plumbing shared by run locations and object stores: run ids, the run layout's file
names, and all-or-nothing writes (temp + rename). A run's files are written through `runs.Run`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Callable

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


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

