"""A sweep's results: a row per trial from its own log, results.jsonl and .csv, best.yaml (the
winning job, ready to train) and best.json."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ganflow.job import load_job
from ganflow.run.layout import SweepLayout
from ganflow.store import is_s3
from ganflow.sweep.spec import SweepError, SweepSpec, override
from ganflow.sweep.trial import TrialLog


@dataclass
class SweepResult:
    location: str
    best_config: Path
    best_checkpoint: Optional[str]
    best_value: Optional[float]
    trials: List[Dict[str, Any]]


TRIAL_ID = re.compile(r"^run_trial_([0-9a-f]+(?:_\d{5})?)(?:_|$)")  # random search: 6a1f0_00003; optuna: 1c4a3c33


def _trial_rows(spec: SweepSpec, grid, location: str, options) -> List[Dict[str, Any]]:
    """A row per trial from its TrialLog (the values shown are those in force at its best
    evaluation: under PBT they change as the trial goes), with Tune's error if it failed."""
    rows = []
    for result in grid:
        name = Path(result.path).name if result.path else ""
        # the directory's id first: after a PBT exploit, Tune's last metrics for a trial can be its donor's
        found = TRIAL_ID.match(name).group(1) if TRIAL_ID.match(name) else (result.metrics or {}).get("trial_id")
        records = TrialLog(location, found, options).records() if found else []
        scored = [r for r in records if r.get(spec.eval_key) is not None]
        pick = min if spec.mode == "min" else max
        best = pick(scored, key=lambda r: r[spec.eval_key]) if scored else None
        last = records[-1] if records else {}
        params = (best or last).get("params") or (result.config or {}).get("params", {})
        lineage = {r["run"]: r.get("forked_from") for r in records if r.get("run")}
        rows.append({
            "trial": name or None,
            **{d.key: params.get(d.key) for d in spec.space},
            "last_step": last.get("step"),
            f"last_{spec.metric}": last.get(spec.eval_key),
            f"best_{spec.metric}": best[spec.eval_key] if best else None,
            "best_step": best["step"] if best else None,
            "best_checkpoint": best["checkpoint"] if best else None,
            # the ganflow runs the trial trained, in order, and the checkpoint each began from (PBT)
            "runs": list(lineage), "forked_from": list(lineage.values()),
            "error": str(result.error).splitlines()[0] if result.error else None,
        })
    return rows



def write_results(spec: SweepSpec, grid, store, prefix: str, location: str, options) -> SweepResult:
    rows = _trial_rows(spec, grid, location, options)
    scored = [r for r in rows if r[f"best_{spec.metric}"] is not None]
    store.put_bytes(f"{prefix}/{SweepLayout.RESULTS}", "".join(json.dumps(r) + "\n" for r in rows).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    store.put_bytes(f"{prefix}/{SweepLayout.RESULTS_CSV}", buf.getvalue().encode())
    if not scored:
        raise SweepError(f"no trial reported eval/{spec.metric}; see the trials' errors in {location}/{SweepLayout.RESULTS}")
    pick = min if spec.mode == "min" else max
    best = pick(scored, key=lambda r: r[f"best_{spec.metric}"])
    winning = [override(d.key, best[d.key]) for d in spec.space]
    best_cfg = load_job(spec.job, spec.overrides + winning)
    header = (f"# best of sweep {spec.name} ({location}): {spec.metric}={best[f'best_{spec.metric}']:.6g} "
              f"at step {best['best_step']}, trial {best['trial']}\n"
              f"# {', '.join(winning)}\n")
    yaml_text = header + best_cfg.to_yaml()
    store.put_bytes(f"{prefix}/{SweepLayout.BEST}", yaml_text.encode())
    store.put_bytes(f"{prefix}/{SweepLayout.BEST_JSON}", json.dumps({
        "metric": spec.metric, "mode": spec.mode, "value": best[f"best_{spec.metric}"], "step": best["best_step"],
        "trial": best["trial"], "values": {d.key: best[d.key] for d in spec.space},
        "checkpoint": best["best_checkpoint"]}, indent=2).encode())
    local_best = Path(store.uri(f"{prefix}/{SweepLayout.BEST}")) if not is_s3(location) else None
    return SweepResult(location, local_best or Path(f"{location}/{SweepLayout.BEST}"), best["best_checkpoint"],
                       best[f"best_{spec.metric}"], rows)

