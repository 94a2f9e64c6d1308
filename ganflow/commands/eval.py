"""`ganflow eval RUN_OR_CHECKPOINT`: one JSON object of metric name -> value, with the protocol,
N and the checkpoint it scored."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ganflow.commands.common import RUN_ERRORS, die, load_generator
from ganflow.config import with_values
from ganflow.metrics.inception import InceptionWeightsError
from ganflow.metrics.scoring import METRICS, EvalError, Scorer, default_metrics
from ganflow.store import store_options


def evaluate(run_or_checkpoint: str, num: int = 2000, metrics: Optional[List[str]] = None, seed: int = 1234,
             extractor: Optional[str] = None, inception_weights: Optional[str] = None,
             reference: Optional[str] = None) -> Dict[str, Any]:
    """The run's own eval settings, with the arguments given on top."""
    if num <= 1:
        raise EvalError(f"--num: must be > 1, got {num}")
    loaded = load_generator(run_or_checkpoint)
    given = {"eval.extractor": extractor, "eval.inception_weights": inception_weights, "eval.reference": reference}
    cfg = with_values(loaded.config, {k: v for k, v in given.items() if v})
    names = metrics or (None if extractor else cfg.eval.metrics) or default_metrics(cfg)
    if reference and not metrics:
        names = ["fid"]  # published statistics give FID only
    if not names:
        raise EvalError(f"no metric fits data.name={cfg.data.name}; available: {', '.join(METRICS)}")
    try:
        scorer = Scorer(cfg, names, store_options(cfg.storage), progress=True)
    except EvalError as err:
        raise EvalError(str(err).replace("eval.metrics:", "--metrics:", 1)) from None
    report = scorer(loaded.G, num, seed)
    report.update(checkpoint=str(loaded.location), step=loaded.step, num_generated=num)
    if scorer.protocol:
        report["protocol"] = scorer.protocol
    if scorer.reference_used:
        report["reference"] = scorer.reference_used
    return report


def main(args) -> int:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        report = evaluate(args.run, num=args.num, metrics=metrics, extractor=args.extractor,
                          inception_weights=args.inception_weights, reference=args.reference)
    except (*RUN_ERRORS, EvalError, InceptionWeightsError) as err:
        return die(str(err))
    print(json.dumps(report))
    return 0
