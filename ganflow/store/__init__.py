"""Object stores: a local directory or an S3-compatible bucket behind one `Store` interface,
atomic writes, botocore's retries. Imports nothing of ganflow but the config schema."""

from __future__ import annotations

import os

from ganflow.store.base import (NotFound, S3Options, StorageError, Store, cache_home, file_sha256, is_s3, join, split_s3,
                                store_options)
from ganflow.store.local import LocalStore
from ganflow.store.s3 import S3Store


def open_store(uri: str | os.PathLike, options: S3Options = S3Options()) -> Store:
    """A store rooted at a directory or at `s3://bucket/prefix`."""
    return S3Store(str(uri).rstrip("/"), options) if is_s3(uri) else LocalStore(uri)


__all__ = ["LocalStore", "NotFound", "S3Options", "S3Store", "StorageError", "Store", "cache_home", "file_sha256", "is_s3",
           "join", "open_store", "split_s3", "store_options"]
