"""A run has one writer: `ganflow train` (a new run, or `--resume`) takes the run's lease before
its first write and holds it with a heartbeat until it ends. Another writer is refused while the
lease is fresh, and takes it over when it is stale: no heartbeat for LEASE_TTL_S, or its holder's
process is gone from this host, or `--force-takeover`.

Taking, beating and releasing are conditional writes (`Store.put_if`): exact on a local disk; on
a bucket as exact as the server's If-None-Match / If-Match (AWS S3, MinIO and moto honour them; a
server that ignores them lets two writers that start within one round trip both take it).
Freshness compares the holder's clock with the reader's: hosts must agree within seconds (NTP).
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Optional

from ganflow.run.layout import RunLayout
from ganflow.store import Store

log = logging.getLogger("ganflow.run")

LEASE_TTL_S = 60.0
HEARTBEAT_S = 10.0


class LeaseHeld(RuntimeError):
    """Another writer holds the run; the message says who, since when, and the way out."""


class LeaseLost(RuntimeError):
    """Another writer took the run over (--force-takeover) while this one was training it."""


@dataclass
class Holder:
    holder: str
    host: str
    pid: int
    since: float
    heartbeat: float
    command: str = "train"
    released: bool = False

    @classmethod
    def parse(cls, data: bytes) -> Optional["Holder"]:
        """The lease's holder, or None for a lease that does not parse (it holds nothing)."""
        try:
            fields = json.loads(data)
            return cls(str(fields["holder"]), str(fields["host"]), int(fields["pid"]), float(fields["since"]),
                       float(fields["heartbeat"]), str(fields.get("command", "")), bool(fields.get("released", False)))
        except (ValueError, TypeError, KeyError):
            return None

    def gone(self) -> bool:
        """Its process is known to be gone: on this host, and no process has its pid."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # someone else's process: alive
            return False
        return False

    def fresh(self, now: float) -> bool:
        return not self.released and now - self.heartbeat < LEASE_TTL_S and not self.gone()

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()


class Lease:
    """The run's lease, held by this process (`take`); a context manager that beats and releases."""

    def __init__(self, store: Store, me: Holder, version: str):
        self.store, self.me, self.version = store, me, version
        self.lost = False  # another writer took it over (--force-takeover) while this one ran
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def take(cls, store: Store, run_uri: str, force: bool = False, command: str = "train") -> "Lease":
        """The lease of the run in `store`, or LeaseHeld naming its holder. Nothing else is written."""
        for _ in range(3):  # another taker between our read and our write: look again
            data, version = store.get_versioned(RunLayout.LEASE)
            other = Holder.parse(data) if data is not None else None
            now = time.time()
            if other is not None and other.fresh(now) and not force:
                raise LeaseHeld(
                    f"run {run_uri} is being written by {other.host} pid {other.pid} since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(other.since))} (heartbeat {now - other.heartbeat:.0f} s "
                    "ago); wait for it, or pass --force-takeover if that process is gone")
            me = Holder(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now, command)
            taken = store.put_if(RunLayout.LEASE, me.encode(), version)
            if taken is not None:
                if other is not None and not other.released:
                    log.warning("took over the lease of %s from %s pid %s", run_uri, other.host, other.pid)
                return cls(store, me, taken)
        raise LeaseHeld(f"run {run_uri}: another writer is taking its lease at this moment; try again")

    def beat(self) -> bool:
        """Renew the heartbeat; False (and `lost`) when another writer has taken the lease."""
        self.me.heartbeat = time.time()
        version = self.store.put_if(RunLayout.LEASE, self.me.encode(), self.version)
        if version is None:
            self.lost = True
            return False
        self.version = version
        return True

    def _beating(self, on_lost) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self.beat():
                    log.error("the lease of this run was taken over by another writer; stopping")
                    on_lost()
                    return
            except Exception as err:  # noqa: BLE001 - a storage hiccup: the next beat tries again
                log.warning("lease heartbeat failed: %s", err)

    def __enter__(self) -> "Lease":
        self._thread = threading.Thread(target=self._beating, args=(_thread.interrupt_main,), daemon=True,
                                        name="ganflow-lease")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.lost:
            self.me.released = True
            try:
                self.store.put_if(RunLayout.LEASE, self.me.encode(), self.version)
            except Exception as err:  # noqa: BLE001 - it goes stale by itself
                log.warning("could not release the lease: %s", err)
