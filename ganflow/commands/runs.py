"""`ganflow runs list LOCATION`: the runs under a storage root, experiment or run."""

from __future__ import annotations

import json
import sys

from ganflow.commands.common import die
from ganflow.run.run import list_runs
from ganflow.store import StorageError


def main(args) -> int:
    try:
        runs = list_runs(args.location)
    except StorageError as err:
        return die(str(err))
    if args.json:
        for r in runs:
            print(json.dumps(r))
        return 0
    if not runs:
        print(f"no runs under {args.location}", file=sys.stderr)
        return 0
    rows = [("RUN", "STATUS", "STEP", "CKPT", "LOSS D", "LOSS G", "IMG/S")]
    for r in runs:
        m = r["metrics"]
        rows.append((r["run"], r["status"], str(r["step"]), "-" if r["checkpoint_step"] is None else str(r["checkpoint_step"]),
                     *(f"{m[k]:{fmt}}" if k in m else "-" for k, fmt in (("loss/d", ".4f"), ("loss/g", ".4f"), ("throughput/imgs_per_s", ".0f")))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
