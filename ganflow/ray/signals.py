"""SIGTERM (Ray's `jobs stop`, a scheduler, `kubectl delete`) as a clean stop: the run being
trained is marked stopped, then KeyboardInterrupt unwinds the driver, so Tune saves a sweep's state."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from ganflow.store import StorageError

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
            try:
                self.run.write_status("stopped")
            except StorageError as err:
                log.warning("could not mark %s stopped: %s", self.run.uri, err)
        raise KeyboardInterrupt
