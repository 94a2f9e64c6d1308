"""A store rooted at a local directory (or a shared filesystem mounted on every node)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from ganflow.store.atomic import TEMP_MARK, copy_atomic, replace_atomically, write_atomic
from ganflow.store.base import NotFound, StorageError, Store


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike):
        self.path = Path(root).expanduser().resolve()
        self.root = str(self.path)

    def _p(self, key: str) -> Path:
        return self.path / key if key else self.path

    def uri(self, key: str = "") -> str:
        return str(self._p(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        write_atomic(self._p(key), data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._p(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no such file {self.uri(key)}") from None

    def get_versioned(self, key: str) -> Tuple[Optional[bytes], Optional[str]]:
        try:
            data = self._p(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()[:32]

    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        import fcntl

        path = self._p(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
            if self.get_versioned(key)[1] != version:
                return None
            write_atomic(path, data)
        return hashlib.sha256(data).hexdigest()[:32]

    def put_file(self, key: str, path: Path) -> None:
        copy_atomic(path, self._p(key))

    def write_with(self, key: str, fill) -> Any:
        return replace_atomically(self._p(key), fill)

    def get_file(self, key: str, path: Path) -> None:
        if not self._p(key).is_file():
            raise NotFound(f"no such file {self.uri(key)}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._p(key), path)

    def exists(self, key: str) -> bool:
        return self._p(key).exists()

    def list(self, prefix: str = "") -> List[str]:
        base = self._p(prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.path)).replace(os.sep, "/") for p in base.rglob("*")
                      if p.is_file() and TEMP_MARK not in p.name)

    def list_dirs(self, prefix: str = "") -> List[str]:
        base = self._p(prefix)
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._p(prefix), ignore_errors=True)

    def remove_leftovers(self, prefix: str = "") -> List[str]:
        root = self._p(prefix)
        found = [p for p in root.rglob(".*") if ".partial-" in p.name or TEMP_MARK in p.name] if root.is_dir() else []
        for p in found:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return [str(p.relative_to(self.path)) for p in found]

    cheap_appends = True

    def append_bytes(self, key: str, data: bytes) -> None:
        path = self._p(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)

    def publish_dir(self, local_dir: Path, key: str, last: str) -> str:
        dest = self._p(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
        shutil.copytree(local_dir, staging)
        if dest.exists():  # a re-run after a restart may republish the same key
            shutil.rmtree(dest)
        os.replace(staging, dest)
        return str(dest)

    def fetch_dir(self, key: str, names: Sequence[str], cache_dir: Path) -> Path:
        return self._p(key)

    def ray_path(self, key: str = "") -> Tuple[str, Any]:
        return str(self._p(key)), None

    def uri_from_ray_path(self, path: str) -> str:
        return path

    def check(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"storage.uri: cannot create {self.root}: {err.strerror}") from None
