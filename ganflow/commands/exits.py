"""Exit codes and the one-line error every verb ends with. Standard library only: a bad input
exits before torch, Ray or W&B is imported."""

from __future__ import annotations

import sys

EXIT_FAILURE, EXIT_USAGE = 1, 2


def die(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"ganflow: error: {msg}", file=sys.stderr)
    return code
