"""Reading W&B's offline run files (`<dir>/wandb/offline-run-*/run-<id>.wandb`) without a server.

The `.wandb` file is a LevelDB-style log of `wandb_internal_pb2.Record` protobufs (32 KiB blocks,
each record chunk prefixed by crc32, length and type), the same file `wandb sync` uploads. wandb
0.31 no longer ships a Python reader, so this is one, for what ganflow needs: resolving
`wandb:project/name:alias` on an offline machine, waiting for a finished run's file, how far an
earlier attempt logged, and tests that read back what a run logged.

This is W&B's private format, and this module is ganflow's only door to it. Checked against
wandb 0.28 to 0.31 (file version 0, `wandb.proto.wandb_internal_pb2`). A wandb that changes it
raises `RunFileFormatError`, and every caller degrades with a warning: resume falls back to
metrics.jsonl, finish does not wait, offline `wandb:` names say to go online.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0
CHUNK = struct.Struct("<IHB")  # crc32 of type+data, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    pass


class RunFileFormatError(WandbFileError):
    """This wandb writes run files this reader does not know (or lacks the protobuf module)."""


def records(path: Path) -> Iterator[bytes]:
    """The serialized records of a `.wandb` file, in order; a torn tail (a killed writer) ends it."""
    data = Path(path).read_bytes()
    ident, magic, _ = HEADER.unpack_from(data, 0) if len(data) >= HEADER.size else (b"", 0, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise RunFileFormatError(f"{path}: not a W&B run file this ganflow can read (file header {ident!r}, {magic:#x})")
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # block trailer
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        chunk = data[pos + CHUNK.size : pos + CHUNK.size + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        pos += CHUNK.size + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def _items(items) -> Dict[str, Any]:
    """History/summary/config items (key or nested_key, value_json) as a flat dict with '/'-less
    nested keys joined by '.' (W&B's own display)."""
    out: Dict[str, Any] = {}
    for it in items:
        key = it.key or ".".join(it.nested_key)
        out[key] = json.loads(it.value_json)
    return out


@dataclass
class LoggedArtifact:
    name: str
    type: str
    aliases: List[str]
    metadata: Dict[str, Any]
    references: Dict[str, str]  # path in the artifact -> reference URI
    local: Dict[str, str] = field(default_factory=dict)  # path in the artifact -> W&B's staged copy (files it holds)
    digests: Dict[str, str] = field(default_factory=dict)  # path in the artifact -> W&B's digest of it


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: List[str] = field(default_factory=list)
    resumed: bool = False
    config: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)  # one dict per row, "_step" included
    summary: Dict[str, Any] = field(default_factory=dict)
    artifacts: List[LoggedArtifact] = field(default_factory=list)
    exit_code: Optional[int] = None

    @property
    def steps(self) -> List[int]:
        return [row["_step"] for row in self.history]


def read_run(run_dir: Path) -> OfflineRun:
    """One offline run directory (`.../wandb/offline-run-<time>-<id>`)."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError:
        raise RunFileFormatError("this wandb has no wandb.proto.wandb_internal_pb2 to read its run files with") from None

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise WandbFileError(f"{run_dir}: no run-*.wandb file")
    run = OfflineRun(path=Path(run_dir))
    for raw in records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.group, run.job_type = r.run_id, r.project, r.run_group, r.job_type
            run.tags, run.resumed = list(r.tags), bool(r.resumed or r.resume)
            run.config.update(_items(r.config.update))
        elif kind == "config":
            run.config.update(_items(rec.config.update))
        elif kind == "history":
            row = _items(rec.history.item)
            row["_step"] = rec.history.step.num if rec.history.HasField("step") else row.get("_step", 0)
            run.history.append(row)
        elif kind == "summary":
            run.summary.update(_items(rec.summary.update))
        elif kind == "artifact":
            a = rec.artifact
            run.artifacts.append(LoggedArtifact(
                name=a.name, type=a.type, aliases=list(a.aliases),
                metadata=json.loads(a.metadata) if a.metadata else {},
                references={c.path: c.ref for c in a.manifest.contents if c.ref},
                local={c.path: c.local_path for c in a.manifest.contents if not c.ref and c.local_path},
                digests={c.path: c.digest for c in a.manifest.contents},
            ))
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    return run


def offline_runs(wandb_dir: Path, run_id: Optional[str] = None) -> List[OfflineRun]:
    """Offline runs under `wandb_dir` (a `wandb/` folder or its parent), oldest first."""
    root = Path(wandb_dir)
    if (root / "wandb").is_dir():
        root = root / "wandb"
    pattern = f"offline-run-*-{run_id}" if run_id else "offline-run-*"
    return [read_run(d) for d in sorted(root.glob(pattern)) if d.is_dir()]


# Ray kills a stopped trial's workers without a finish: the run file keeps all but its last second.
RUN_FILE_FLUSH_S = 1.0


def flush_setting(wandb) -> Dict[str, float]:
    """W&B's private setting for it (new in wandb 0.31; older versions refuse unknown settings)."""
    known = getattr(wandb.Settings, "model_fields", {})
    return {"x_transaction_log_flush_interval": RUN_FILE_FLUSH_S} if "x_transaction_log_flush_interval" in known else {}
