"""`ganflow` command line: train, sample.

Exit codes: 0 success, 2 bad input (config, arguments, missing run), 1 training failure.
`train` prints the run location as the last line of stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ganflow.objectstore import is_s3

EXIT_FAILURE, EXIT_USAGE = 1, 2


def _die(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"ganflow: error: {msg}", file=sys.stderr)
    return code


def cmd_train(args: argparse.Namespace) -> int:
    from ganflow.config import ConfigError, load
    from ganflow.storage import CONFIG_FILE

    job, overrides = args.job, list(args.overrides)
    if job is not None and "=" in job:  # `ganflow train --resume RUN key=value` has no job file
        job, overrides = None, [job] + overrides
    if job is None and args.resume is None:
        return _die("train needs a JOB.yaml (or --resume RUN)")
    if args.resume is not None:
        if is_s3(args.resume):
            return _die("--resume: s3:// runs are not available in this version yet; use a local run directory")
        run = Path(args.resume)
        if not (run / CONFIG_FILE).is_file():
            return _die(f"--resume: {run} is not a run directory (no {CONFIG_FILE})")
        job = job or run / CONFIG_FILE
    try:
        cfg = load(job, overrides)
    except ConfigError as err:
        return _die(f"config: {err}")
    if is_s3(cfg.storage.uri):  # validated, but the run path is not wired to it yet
        return _die("config: storage.uri: training into s3:// is not available in this version yet; use a local directory")

    from ganflow.train import run as run_training

    try:
        run_dir = run_training(cfg, address=args.address, resume=args.resume)
    except KeyboardInterrupt:
        return _die("interrupted", 130)
    except Exception as err:  # Ray's TrainingFailedError and friends: the traceback is above
        return _die(f"training failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", EXIT_FAILURE)
    print(run_dir)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ganflow.checkpoint import CheckpointError
    from ganflow.objectstore import StorageError
    from ganflow.sample import SampleError, sample_to_file

    try:
        path = sample_to_file(args.run, args.num, Path(args.out), seed=args.seed, label=args.label)
    except (CheckpointError, SampleError, StorageError) as err:
        return _die(str(err))
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganflow", description="Train GANs on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a job (locally, or on the Ray cluster at --address)")
    t.add_argument("job", nargs="?", help="job spec YAML, e.g. jobs/quickstart.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 optim.g.lr=1e-4")
    t.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an in-process local Ray)")
    t.add_argument("--resume", help="run directory to continue to train.steps")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a run or checkpoint")
    s.add_argument("run", help="run directory (its latest checkpoint) or one checkpoint directory")
    s.add_argument("--num", type=int, required=True, help="number of samples")
    s.add_argument("--out", required=True, help="output file: .npz (arrays) or .png (grid)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, default=None, help="class label for conditional models")
    s.set_defaults(fn=cmd_sample)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
