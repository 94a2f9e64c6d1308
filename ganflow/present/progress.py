"""Progress of long local work (eval, synth, score, reference statistics, sweeps): a tqdm bar on a
terminal, else one line to stderr per `every` percent, so a log file shows it too; nothing when
the "ganflow" logger is quieter than INFO (`ganflow -q`)."""

from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "", stream: Optional[TextIO] = None, every: int = 10):
        self.total, self.desc, self.unit, self.every = max(int(total), 1), desc, unit, every
        self.stream = stream or sys.stderr
        self.done, self.shown = 0, 0  # percent already printed
        self.bar = None
        self.quiet = logging.getLogger("ganflow").level > logging.INFO  # set by `ganflow -q`; unset in a library user
        if self.stream.isatty() and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit or "it", file=self.stream, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if self.quiet:
            return
        percent = min(100, self.done * 100 // self.total)
        if percent >= self.shown + self.every or (self.done >= self.total and self.shown < 100):
            self.shown = percent - percent % self.every if percent < 100 else 100
            unit = f" {self.unit}" if self.unit else ""
            print(f"[ganflow] {self.desc}: {self.done}/{self.total}{unit} ({percent}%)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
