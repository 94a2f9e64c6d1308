"""SIGTERM (Ray's `jobs stop`, a scheduler, `kubectl delete`) as a clean stop: the run being
trained is marked stopped, then KeyboardInterrupt unwinds the driver, so Tune saves a sweep's state.
A worker's SIGTERM, with train.checkpoint_on_preempt, as a checkpoint first (`PreemptWatch`)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Iterator


log = logging.getLogger("ganflow.ray")


class SigtermStop:
    """Made by the CLI for `train` and `sweep`; the driver tells it which run it trains."""

    def __init__(self) -> None:
        self.run = None  # the run to mark stopped

    def install(self) -> None:
        """(Again) after `ray.init`, whose core worker sets its own handler; main thread only."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._interrupt)

    @contextlib.contextmanager
    def watching(self, run) -> Iterator[None]:
        self.run = run
        try:
            yield
        finally:
            self.run = None

    def _interrupt(self, signum, frame) -> None:
        # Ray's `jobs stop` kills after a few seconds of grace; mark the run before unwinding
        if self.run is not None:
            from ganflow.store import StorageError  # here: the CLI installs this before anything heavy is imported

            try:
                self.run.write_status("stopped")
            except StorageError as err:
                log.warning("could not mark %s stopped: %s", self.run.uri, err)
        raise KeyboardInterrupt


# Signals are per process, and so is this: the handler runs on the actor's main thread, the loop
# that reads it on the training thread. Set by a SIGTERM while `PreemptWatch` is armed.
PREEMPTED = threading.Event()


def _on_sigterm(signum, frame) -> None:
    PREEMPTED.set()
    sys.stdout.write(f"[ganflow] SIGTERM: checkpointing at the next step boundary (pid {os.getpid()})\n")
    sys.stdout.flush()


def _arm() -> None:
    _previous.append(signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGTERM, _on_sigterm)


def _disarm() -> None:
    if _previous:
        signal.signal(signal.SIGTERM, _previous.pop())


_previous: list = []  # the handler ours replaced (Ray's: exit the worker), put back by _disarm


class PreemptWatch:
    """`train.checkpoint_on_preempt`: a Ray Train worker's SIGTERM (a spot reclaim, `kubectl drain`,
    `kill`) no longer ends the worker mid-step; the loop sees `requested()` at the next step
    boundary, checkpoints, and stops (`Preempted`), so Ray Train restarts from that checkpoint."""

    def __init__(self) -> None:
        from ganflow.ray.compat import on_train_worker_main_thread

        self._run = on_train_worker_main_thread
        PREEMPTED.clear()
        self.armed = self._run(_arm)

    def requested(self) -> bool:
        return PREEMPTED.is_set()

    def close(self, handled: bool) -> None:
        """Ray's handler back. A SIGTERM the loop did not act on (it came after the last step
        boundary, or during start-up) then ends the worker as Ray's handler would have."""
        if self.armed:
            self._run(_disarm)
            self.armed = False
            if PREEMPTED.is_set() and not handled:
                os.kill(os.getpid(), signal.SIGTERM)
