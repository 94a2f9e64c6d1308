"""`ganflow runs list LOCATION` and `ganflow runs show RUN`: runs at a glance, without W&B online."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ganflow.api import best_as_dict, best_evaluation, run_config, run_summaries
from ganflow.commands.common import die
from ganflow.config import JobConfig
from ganflow.present.pictures import curves_png, strip_png
from ganflow.run.layout import RunLayout
from ganflow.run.run import Run, summarize
from ganflow.store import StorageError, is_s3
from ganflow.store.atomic import write_atomic


def _ago(t: Optional[float]) -> str:
    if t is None:
        return "-"
    s = max(time.time() - t, 0)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def _table(rows: List[tuple]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def main(args) -> int:
    if args.runs_command == "show":
        return show(args)
    if not is_s3(args.location) and not Path(args.location).expanduser().is_dir():  # a typo is not an empty location
        return die(f"{args.location}: no such directory; give a storage.uri (a directory or s3://bucket/prefix)")
    try:
        runs = run_summaries(args.location)
    except StorageError as err:
        return die(str(err))
    if args.json:
        for r in runs:
            print(json.dumps(r))
        return 0
    if not runs:
        print(f"no runs under {args.location}", file=sys.stderr)
        return 0
    rows = [("RUN", "STATUS", "STEP", "CKPT", "LOSS D", "LOSS G", "IMG/S", "BEST", "HEARTBEAT")]
    for r in runs:
        m, b = r["metrics"], r["best"]
        rows.append((r["run"], r["status"], str(r["step"]), "-" if r["checkpoint_step"] is None else str(r["checkpoint_step"]),
                     *(f"{m[k]:{fmt}}" if k in m else "-" for k, fmt in (("loss/d", ".4f"), ("loss/g", ".4f"), ("throughput/imgs_per_s", ".0f"))),
                     f"{b['name']} {b['value']:.4g} @ {b['step']}" if b else "-", _ago(r["heartbeat"])))
    _table(rows)
    return 0


def show(args) -> int:
    """Status, config summary, latest and best values, newest checkpoint; the curves as a PNG."""
    try:
        run = Run.open(args.run)
        cfg = run_config(run)
        if cfg is None:
            return die(f"runs show: {args.run} is not a run (no {RunLayout.CONFIG} there)")
        s = summarize(run)
    except StorageError as err:
        return die(str(err))
    records = s["records"]
    best = best_evaluation(cfg, records)
    checkpoint = run.checkpoints()[0] if s["checkpoint_step"] is not None else None
    if args.json:
        print(json.dumps({
            "run": s["run"], "status": s["status"], "step": s["step"], "steps": cfg.train.steps, "heartbeat": s["heartbeat"],
            "job": {"name": cfg.name, "model": cfg.model.name, "data": cfg.data.name, "loss": cfg.loss.name,
                    "batch_size": cfg.train.batch_size, "seed": cfg.train.seed},
            "latest": {k: v for k, v in s["metrics"].items() if isinstance(v, (int, float))},
            "best": best_as_dict(best),
            "checkpoint": run.store.uri(checkpoint) if checkpoint else None}))
        if not args.plot:
            return 0
    else:
        _describe(s, cfg, best, run.store.uri(checkpoint) if checkpoint else None)
    plot = Path(args.plot or f"{run.id}-curves.png")
    steps = [r["step"] for r in records]

    def series(key: str) -> list:
        return [(st, r[key]) for st, r in zip(steps, records) if isinstance(r.get(key), (int, float))]

    evals = sorted({k for r in records for k in r if k.startswith("eval/") and k not in ("eval/num_generated", "eval/seconds")
                    and not k.endswith("_std") and isinstance(r[k], (int, float))})
    if best:  # the run's ranking value first
        evals = sorted(evals, key=lambda k: k != f"eval/{best[0]}")
    write_atomic(plot, curves_png({
        "losses": {"loss/d": series("loss/d"), "loss/g": series("loss/g")},
        "throughput (images/s)": {"all workers": series("throughput/imgs_per_s")},
        "evaluation": {k: series(k) for k in evals[:4]},
    }))
    said = sys.stderr if args.json else sys.stdout
    print(f"curves     {plot}", file=said)
    snapshots = run.samples()
    if snapshots:
        strip = plot.with_name(plot.stem.removesuffix("-curves") + "-samples.png")
        write_atomic(strip, strip_png([(step, run.store.get_bytes(key)) for step, key in snapshots]))
        print(f"samples    {strip}", file=said)
    return 0


def _describe(s: Dict[str, Any], cfg: JobConfig, best, checkpoint: Optional[str]) -> None:
    print(f"run        {s['run']}")
    print(f"status     {s['status']} at step {s['step']}/{cfg.train.steps} (heartbeat {_ago(s['heartbeat'])})")
    print(f"job        {cfg.name}: {cfg.model.name} on {cfg.data.name}"
          f"{f' {cfg.data.resolution}px' if cfg.data.name not in ('ring', 'grid') else ''}, loss {cfg.loss.name}, "
          f"batch {cfg.train.batch_size} on {'-'.join(map(str, sorted({cfg.scaling.min_workers, cfg.scaling.max_workers})))} worker(s), lr G {cfg.optim.g.lr:g} D {cfg.optim.d.lr:g}, "
          f"seed {cfg.train.seed}")
    latest = ", ".join(f"{k} {v:.4g}" for k, v in s["metrics"].items() if isinstance(v, (int, float)))
    print(f"latest     {latest or '-'}")
    print(f"best       {f'{best[0]} {best[1]:.6g} at step {best[2]}' if best else '- (no evaluation yet)'}")
    print(f"checkpoint {checkpoint or '-'}")
