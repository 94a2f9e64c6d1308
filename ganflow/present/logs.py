"""What the `ganflow` command says on stderr: one handler on the "ganflow" logger, `[ganflow] `
lines (warnings and errors say so), its level from -v/-q. The library logs and never prints; a
program that imports ganflow keeps its own logging setup (this is installed by the CLI only)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test's capture, a redirect)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Lines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"[ganflow] {kind}{record.getMessage()}"


@contextlib.contextmanager
def configured(verbosity: int = 0) -> Iterator[None]:
    """For one command: -q (warnings and errors only), -qq (errors only), default (what ganflow is
    doing), -v (debug). The logger is left as it was after (a command run in-process, in a test)."""
    logger = logging.getLogger("ganflow")
    handler, level = _Stderr(), logger.level
    handler.setFormatter(_Lines())
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(max(verbosity, -2), logging.DEBUG))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
