"""`ganflow sweep SWEEP.yaml [overrides] | --resume LOCATION`: prints best.yaml's location last."""

from __future__ import annotations

import json
import sys
from typing import Optional

from ganflow.commands.common import die
from ganflow.config import ConfigError
from ganflow.metrics.inception import InceptionWeightsError
from ganflow.ray.cluster import RayAddressError
from ganflow.ray.signals import SigtermStop
from ganflow.run.layout import SweepLayout
from ganflow.store import StorageError
from ganflow.sweep.spec import SweepError, load_saved_spec, load_spec
from ganflow.sweep.tune import sweep


def main(args, stop: Optional[SigtermStop] = None) -> int:
    try:
        if args.resume:
            if args.spec or args.overrides:
                raise SweepError("--resume: give the sweep's location alone (it runs with the spec and overrides it began with)")
            spec = load_saved_spec(args.resume)
        elif not args.spec:
            raise SweepError("sweep: name a sweep spec (jobs/sweep_*.yaml), or --resume LOCATION")
        else:
            spec = load_spec(args.spec, list(args.overrides))
        result = sweep(spec, address=args.address, resume=args.resume, stop=stop)
    except (SweepError, StorageError, InceptionWeightsError, RayAddressError) as err:
        return die(str(err))
    except ConfigError as err:  # data.path, checked before Ray starts
        return die(f"config: {err}")
    except KeyboardInterrupt:
        return die("interrupted", 130)
    if args.json:  # issue 31: what a script wants of the best trial, on stdout
        print(json.dumps({"sweep": result.location, "metric": spec.metric, "best_value": result.best_value,
                          "best_checkpoint": result.best_checkpoint, "best_config": str(result.best_config),
                          "trials": len(result.trials)}))
        return 0
    print(f"best {spec.metric}={result.best_value:.6g}: {result.best_checkpoint}", file=sys.stderr)
    print(f"results: {result.location}/{SweepLayout.RESULTS}, {SweepLayout.RESULTS_CSV}, {SweepLayout.BEST_JSON}",
          file=sys.stderr)
    print(result.best_config)
    return 0
