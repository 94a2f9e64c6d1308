"""All-or-nothing local writes (temp file + rename), for stores and for the CLI's output files."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

TEMP_MARK = ".tmp-"  # in the names of files still being written; listings skip them


def replace_atomically(path: Path, fill: Callable[[Path], Any]) -> Any:
    """`fill(tmp)` writes a temporary file beside `path`, which is then renamed over it: readers see
    the old file or the whole new one. A failed fill leaves nothing behind. Returns fill's result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}"
    try:
        result = fill(tmp)
        os.replace(tmp, path)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_bytes(data.encode() if isinstance(data, str) else data))


def copy_atomic(src: Path, path: Path) -> None:
    replace_atomically(path, lambda tmp: shutil.copyfile(src, tmp))

