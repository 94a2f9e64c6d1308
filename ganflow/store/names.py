"""Names from outside joined to a root: the one owner of the rule that they stay under it.

A checkpoint manifest's file names, a run's class list, an archive's member paths, a prepared set's
digests are data someone else wrote. Each goes through `contained` (a relative key or path) or
`part` (one component, e.g. a folder) before it is joined to a directory or a key prefix.
"""

from __future__ import annotations

import re
from pathlib import Path

from ganflow.store.base import StorageError

MAX_PART, MAX_NAME = 255, 1024  # bytes of one component (what file systems allow), of a whole name
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class UnsafeName(StorageError):
    """A name that would leave its root, or that no file system takes."""


def contained(name: str, what: str) -> str:
    """`name` as given when it is a relative name that stays under any root: no `..` or `.` parts,
    not absolute, no empty part, no NUL or backslash, parts of at most 255 bytes."""
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"{what}: an empty name")
    problem = None
    if "\x00" in name or "\\" in name:
        problem = "holds a NUL or a backslash"
    elif name.startswith("/"):
        problem = "is absolute"
    elif len(name.encode()) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} bytes"
    else:
        for p in name.split("/"):
            if p in ("", ".", ".."):
                problem = f"has a {p or 'empty'!r} part"
                break
            if len(p.encode()) > MAX_PART:
                problem = f"has a part longer than {MAX_PART} bytes"
                break
    if problem:
        raise UnsafeName(f"{what}: {name[:80]!r} {problem}; refused (it would leave its folder)")
    return name


def part(name: str, what: str) -> str:
    """One path component (a folder or file name), contained."""
    if isinstance(name, str) and "/" in name:
        raise UnsafeName(f"{what}: {name[:80]!r} holds a '/'; refused (one folder name expected)")
    return contained(name, what)


def join_under(root: Path, name: str, what: str) -> Path:
    return Path(root) / contained(name, what)


def hex_digest(value: str, what: str) -> str:
    """A sha256 hex digest (used as a cache file name)."""
    if not isinstance(value, str) or not SHA256.match(value):
        raise UnsafeName(f"{what}: {str(value)[:80]!r} is not a sha256 hex digest")
    return value
