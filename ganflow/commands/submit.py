"""`ganflow submit JOB.yaml [--sweep]`: validate here, stage, and submit through the Ray Jobs API."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from ganflow.commands.common import EXIT_FAILURE, die
from ganflow.config import ConfigError, redact
from ganflow.job import load_job
from ganflow.ray import jobs
from ganflow.ray.jobs import JobsError, Submission, dashboard_url, follow, wait
from ganflow.sweep.spec import SweepError, load_spec


def prepare_train(job: str, overrides: List[str], staging: Path, ship_code: bool = True,
                  extra_env: List[str] = ()) -> Submission:
    """Validate the job and stage what the cluster needs to run it."""
    cfg = load_job(job, overrides)
    jobs.check_shared_paths(cfg)
    (staging / "job.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact(cfg.to_dict()))))
    return jobs.staged("train", cfg.name, Path(job), "python -m ganflow.cli train job.yaml", cfg, staging, ship_code, extra_env)


def prepare_sweep(spec_path: str, overrides: List[str], staging: Path, ship_code: bool = True,
                  extra_env: List[str] = ()) -> Submission:
    """Validate the sweep (every value its space can take) and stage it with its base job."""
    spec = load_spec(spec_path, overrides)
    jobs.check_shared_paths(spec.base)
    (staging / "job.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact(spec.base.to_dict()))))
    (staging / "sweep.yaml").write_text(OmegaConf.to_yaml({**spec.source, "job": "job.yaml", "overrides": []}))
    return jobs.staged("sweep", spec.name, Path(spec_path), "python -m ganflow.cli sweep sweep.yaml", spec.base, staging,
                       ship_code, extra_env)


def prepare_resume(run: str, overrides: List[str], staging: Path, ship_code: bool = True,
                   extra_env: List[str] = ()) -> Submission:
    """Continue a run on the cluster: its own config.yaml (read here, from where the run lives)
    with the overrides on top is validated here; the cluster runs `train --resume RUN ...`."""
    import os
    import shlex

    from ganflow.config import load
    from ganflow.job import complete
    from ganflow.run.layout import RunLayout
    from ganflow.run.run import Run
    from ganflow.store import NotFound, S3Options, StorageError, is_s3

    if not is_s3(run) and not os.path.isabs(os.path.expanduser(run)):
        raise JobsError(f"--resume: {run!r} is a path relative to this machine; give the run's s3:// URI, or its absolute "
                        "path on a filesystem every node mounts")
    try:
        text = Run.open(run, S3Options(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)).read_config()
    except NotFound:
        raise JobsError(f"--resume: {run} is not a run (no {RunLayout.CONFIG} there)") from None
    except StorageError as err:
        raise JobsError(f"--resume: {err}") from None
    cfg = complete(load(None, overrides, text=text))
    jobs.check_shared_paths(cfg)
    entrypoint = "python -m ganflow.cli train --resume " + shlex.join([run, *overrides])
    return jobs.staged("train", cfg.name, Path.cwd() / RunLayout.CONFIG, entrypoint, cfg, staging, ship_code, extra_env)


def submit(kind: str, spec: str, overrides: List[str], address: Optional[str] = None, ship_code: bool = True,
           extra_env: List[str] = ()) -> str:
    """Validate, stage and submit (`kind`: train, sweep, or resume with `spec` the run); returns the submission id."""
    prepare = {"sweep": prepare_sweep, "resume": prepare_resume}.get(kind, prepare_train)
    with tempfile.TemporaryDirectory(prefix="ganflow-submit-") as tmp:
        return jobs.submit_staged(prepare(spec, overrides, Path(tmp), ship_code, extra_env), address)


def main(args) -> int:
    job, overrides = args.job, list(args.overrides)
    if args.resume is not None:  # `ganflow submit --resume RUN key=value ...`: no job file
        if job is not None and "=" not in job:
            return die("submit --resume RUN takes overrides only; the run's own config.yaml is its job")
        job, overrides = args.resume, ([job] if job else []) + overrides
    elif job is None:
        return die("submit needs a JOB.yaml (a sweep spec with --sweep), or --resume RUN")
    kind = "resume" if args.resume is not None else "sweep" if args.sweep else "train"
    try:
        job_id = submit(kind, job, overrides, args.address, ship_code=not args.no_code, extra_env=args.env or [])
    except ConfigError as err:
        return die(f"config: {err}")
    except (JobsError, SweepError) as err:
        return die(str(err))
    print(f"submitted {job_id}: {dashboard_url(args.address, job_id)}", file=sys.stderr)
    if not args.json:
        print(job_id)
    if args.no_wait:
        if args.json:
            print(json.dumps({"submission_id": job_id, "dashboard": dashboard_url(args.address, job_id), "status": "PENDING"}))
        return 0
    try:
        for chunk in follow(job_id, args.address):
            sys.stderr.write(chunk)
        state = wait(job_id, args.address)
    except JobsError as err:
        return die(str(err))
    print(f"job {job_id}: {state}", file=sys.stderr)
    if args.json:
        print(json.dumps({"submission_id": job_id, "dashboard": dashboard_url(args.address, job_id), "status": state}))
    return 0 if state == "SUCCEEDED" else EXIT_FAILURE
