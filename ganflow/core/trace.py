"""Start-up marks for benchmarks/startup.py: with GANFLOW_TRACE set to a file, each `mark(phase)`
appends one JSON line (phase, wall time, pid, this process's start time) to it, from the CLI, the
driver and the Ray workers alike (they inherit the variable); unset, a mark costs one dictionary
lookup. Standard library only: the CLI marks before anything heavy is imported."""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, TypeVar

F = TypeVar("F", bound=Callable)

TRACE_ENV = "GANFLOW_TRACE"


def mark(phase: str) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        line = {"phase": phase, "t": time.time(), "pid": os.getpid(), "process_start": _process_start()}
        with open(path, "a") as out:  # one short write per line: lines of several processes do not mix
            out.write(json.dumps(line) + "\n")


def on_first_call(phase: str, fn: F) -> F:
    """`fn`, marking `phase` when its first call returns (a worker's first batch); `fn` itself when
    nothing is traced, so the training loop's batches pay nothing."""
    if not os.environ.get(TRACE_ENV):
        return fn
    done = False

    def wrapped(*args, **kwargs):
        nonlocal done
        out = fn(*args, **kwargs)
        if not done:
            done = True
            mark(phase)
        return out

    return wrapped  # type: ignore[return-value]


def _process_start() -> Optional[float]:
    """When this process started (wall time, Linux's /proc to 10 ms), else None."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
