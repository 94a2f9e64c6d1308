"""Where run files live: a local directory or an S3-compatible bucket, behind one small interface.

Keys are '/'-separated paths relative to the store's root (a directory, or `s3://bucket/prefix`).
Every write is all-or-nothing for readers: a local file is renamed into place, an S3 object
appears only when its PUT (or multipart upload) completes. Credentials come from the AWS chain
(environment, shared profile, instance/pod role) and never pass through this package's arguments,
messages or logs. What differs between a directory and a bucket lives behind `Store` methods;
callers never ask which one they hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

class StorageError(RuntimeError):
    """A storage failure, with a one-line message that names the setting or object to fix."""


class NotFound(StorageError):
    pass


@dataclass(frozen=True)
class S3Options:
    endpoint_url: Optional[str] = None  # MinIO, Ceph RGW, R2, a test server; None: AWS
    region: Optional[str] = None
    retry_mode: str = "standard"  # botocore's standard or adaptive
    max_attempts: int = 10  # total, the first attempt included


def cache_home() -> Path:
    """ganflow's local cache folder: $GANFLOW_CACHE, else ~/.cache/ganflow (weights fetched from a
    bucket, prepared shards)."""
    return Path(os.environ.get("GANFLOW_CACHE") or Path.home() / ".cache" / "ganflow")


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read in 4 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.strip("/")


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Store:
    """The operations runs need; subclasses implement them for one kind of storage."""

    root: str

    def uri(self, key: str = "") -> str:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def put_file(self, key: str, path: Path) -> None:
        raise NotImplementedError

    def get_file(self, key: str, path: Path) -> None:
        raise NotImplementedError

    def write_with(self, key: str, fill: Callable[[Path], Any]) -> Any:
        """`fill(path)` writes a local file that becomes `key`, whole or not at all; returns fill's
        result. A directory has it written in place (no copy); a bucket gets it uploaded."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ganflow-put-") as tmp:
            path = Path(tmp) / Path(key).name
            result = fill(path)
            self.put_file(key, path)
            return result

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def get_versioned(self, key: str) -> Tuple[Optional[bytes], Optional[str]]:
        """(data, version) of `key`, or (None, None) when there is none: the version is what
        `put_if` compares against (a bucket's ETag; a file's content digest)."""
        raise NotImplementedError

    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        """Write `key` only if its version is still `version` (None: only if there is no `key`);
        the new version, or None when another writer got there first. Exact on a local disk (a lock
        around the compare and the write); on a bucket it is the server's conditional write
        (If-None-Match / If-Match), which AWS S3, MinIO and moto honour."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> List[str]:
        """Every key below `prefix` (recursively), sorted."""
        raise NotImplementedError

    def list_dirs(self, prefix: str = "") -> List[str]:
        """The immediate sub-'directories' of `prefix` (names only), sorted."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        raise NotImplementedError

    def remove_leftovers(self, prefix: str = "") -> List[str]:
        """What an interrupted writer left under `prefix` (a directory's partial folders and temporary
        files; a bucket has none: its objects appear whole), removed; their names. Call it holding
        the run's lease only."""
        return []

    def append_bytes(self, key: str, data: bytes) -> None:
        """Add `data` at the end of object `key` (created if missing)."""
        raise NotImplementedError

    # A bucket rewrites a whole object to append to it: a log there is better kept in memory and
    # uploaded now and then (run.Run does). A directory appends in place.
    cheap_appends: bool = False

    def publish_dir(self, local_dir: Path, key: str, last: str) -> str:
        """Put a finished local directory under `key`, never visible half-written: locally a
        rename, in a bucket every file first and `last` (its manifest) after them. Returns its URI."""
        raise NotImplementedError

    def fetch_dir(self, key: str, names: Sequence[str], cache_dir: Path) -> Path:
        """A local directory holding `names` of `key`, in that order: the directory itself for a
        local store (nothing copied), else a fresh download under `cache_dir`."""
        raise NotImplementedError

    def ray_path(self, key: str = "") -> Tuple[str, Any]:
        """(path, pyarrow filesystem or None): how Ray Train's storage names `key`."""
        raise NotImplementedError

    def uri_from_ray_path(self, path: str) -> str:
        """Our URI for a path Ray hands back (`ray_path`'s inverse)."""
        raise NotImplementedError

    def check(self) -> None:
        """Fail fast, before any training, if the store cannot be written."""

    def check_reachable(self) -> None:
        """Fail fast if the store cannot be reached at all (wrong endpoint, bucket, credentials); creates nothing."""


def store_options(storage_cfg) -> S3Options:
    """S3Options from a StorageConfig (`cfg.storage`)."""
    return S3Options(endpoint_url=storage_cfg.endpoint_url, region=storage_cfg.region,
                     retry_mode=storage_cfg.retry_mode, max_attempts=storage_cfg.max_attempts)
