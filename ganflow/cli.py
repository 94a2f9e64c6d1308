"""`ganflow` command line: train, sweep, submit, jobs, sample, eval, runs list, dashboard.

Exit codes: 0 success, 2 bad input (config, arguments, missing run), 1 training failure.
`train` prints the run location as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

EXIT_FAILURE, EXIT_USAGE = 1, 2


def _die(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"ganflow: error: {msg}", file=sys.stderr)
    return code


def _override(overrides: List[str], key: str) -> Optional[str]:
    values = [item.split("=", 1)[1] for item in overrides if item.startswith(key + "=")]
    return values[-1] if values else None


def cmd_train(args: argparse.Namespace) -> int:
    from ganflow.config import ConfigError, load
    from ganflow.objectstore import NotFound, S3Options, StorageError
    from ganflow.runs import Run

    job, overrides = args.job, list(args.overrides)
    if job is not None and "=" in job:  # `ganflow train --resume RUN key=value` has no job file
        job, overrides = None, [job] + overrides
    if job is None and args.resume is None:
        return _die("train needs a JOB.yaml (or --resume RUN)")
    with tempfile.TemporaryDirectory(prefix="ganflow-") as tmp:
        if args.resume is not None and job is None:
            # the run's own config.yaml, read from wherever the run lives (endpoint: the override
            # if given, else AWS_ENDPOINT_URL); the overrides then apply on top of it
            try:
                resumed = Run.open(args.resume, S3Options(endpoint_url=_override(overrides, "storage.endpoint_url")))
                if not resumed.is_local:
                    resumed.store.check()
                text = resumed.read_config()
            except NotFound:
                return _die(f"--resume: {args.resume} is not a run (no config.yaml there)")
            except StorageError as err:
                return _die(f"--resume: {err}")
            job = Path(tmp) / "config.yaml"
            job.write_text(text)
        try:
            cfg = load(job, overrides)
        except ConfigError as err:
            return _die(f"config: {err}")

        from ganflow.metrics.inception import InceptionWeightsError
        from ganflow.tracking import TrackingError
        from ganflow.train import run as run_training

        try:
            run = run_training(cfg, address=args.address, resume=args.resume)
        except (StorageError, TrackingError, InceptionWeightsError) as err:  # raised before any training: storage or W&B unusable
            return _die(str(err))
        except ConfigError as err:  # data.path in a bucket, checked before any training
            return _die(f"config: {err}")
        except KeyboardInterrupt:
            return _die("interrupted", 130)
        except Exception as err:  # Ray's TrainingFailedError and friends: the traceback is above
            return _die(f"training failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", EXIT_FAILURE)
    print(run.uri)
    return 0


def _run_errors() -> tuple:
    """What opening a trained run can raise with a message meant for the user: a bad location or
    checkpoint, storage, a `wandb:` name, a generator the command cannot use."""
    from ganflow.checkpoint import CheckpointError
    from ganflow.objectstore import StorageError
    from ganflow.sample import SampleError
    from ganflow.tracking import TrackingError

    return CheckpointError, SampleError, StorageError, TrackingError


def cmd_sample(args: argparse.Namespace) -> int:
    from ganflow.sample import sample_to_file

    try:
        path = sample_to_file(args.run, args.num, Path(args.out), seed=args.seed, label=args.label)
    except _run_errors() as err:
        return _die(str(err))
    print(path)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ganflow.sample import interpolate_to_file

    try:
        path = interpolate_to_file(args.run, Path(args.out), rows=args.rows, steps=args.steps, seed=args.seed)
    except _run_errors() as err:
        return _die(str(err))
    print(path)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ganflow.synth import SynthError, synthesize

    try:
        manifest = synthesize(args.run, args.out, num=args.num, per_class=args.per_class, fmt=args.format,
                              truncation=args.truncation, seed=args.seed, workers=args.workers)
    except (*_run_errors(), SynthError) as err:
        return _die(str(err))
    rate = manifest["total"] / max(manifest["seconds"], 1e-9)
    print(f"{manifest['total']} images ({', '.join(f'{k}: {v}' for k, v in manifest['counts'].items())}) in "
          f"{manifest['seconds']:.1f} s, {rate:.0f} images/s with {args.workers} worker(s)", file=sys.stderr)
    print(args.out)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ganflow.score import ScoreError, ScoreSettings, mean_by_label, score_images, write_csv

    settings = ScoreSettings(steps=args.steps, lr=args.lr, feature_weight=args.feature_weight, seed=args.seed)
    try:
        result = score_images(args.run, args.data, args.method, settings, args.workers)
        write_csv(result["rows"], args.out)
    except (*_run_errors(), ScoreError) as err:
        return _die(str(err))
    rows = result["rows"]
    means = ", ".join(f"{k}: {v:.3f}" for k, v in mean_by_label(rows).items())
    print(f"{len(rows)} images scored ({args.method}) in {result['seconds']:.1f} s with {args.workers} worker(s); "
          f"mean score by label: {means}", file=sys.stderr)
    if result["auroc"] is not None:
        print(f"AUROC {result['auroc']:.3f} (anomalies: labels outside the run's classes "
              f"{', '.join(result['normal_classes'])})", file=sys.stderr)
    print(args.out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ganflow.export import ExportError, export_generator

    try:
        sidecar = export_generator(args.run, args.format, Path(args.out), atol=args.atol)
    except (*_run_errors(), ExportError) as err:
        return _die(str(err))
    print(f"{args.format}: max |exported - pytorch| = {sidecar['max_abs_diff']:.2g} on {sidecar['checked_on']} latents; "
          f"calling convention in {args.out}.json", file=sys.stderr)
    print(args.out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ganflow.evaluate import EvalError, evaluate
    from ganflow.metrics.inception import InceptionWeightsError

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        report = evaluate(args.run, num=args.num, metrics=metrics, extractor=args.extractor,
                          inception_weights=args.inception_weights)
    except (*_run_errors(), EvalError, InceptionWeightsError) as err:
        return _die(str(err))
    print(json.dumps(report))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ganflow.objectstore import StorageError
    from ganflow.metrics.inception import InceptionWeightsError
    from ganflow.sweep import SweepError, load_saved_spec, load_spec, sweep

    try:
        if args.resume:
            if args.spec or args.overrides:
                raise SweepError("--resume: give the sweep's location alone (it runs with the spec and overrides it began with)")
            spec = load_saved_spec(args.resume)
        elif not args.spec:
            raise SweepError("sweep: name a sweep spec (jobs/sweep_*.yaml), or --resume LOCATION")
        else:
            spec = load_spec(args.spec, list(args.overrides))
        result = sweep(spec, address=args.address, resume=args.resume)
    except (SweepError, StorageError, InceptionWeightsError) as err:
        return _die(str(err))
    except KeyboardInterrupt:
        return _die("interrupted", 130)
    print(f"best {spec.metric}={result.best_value:.6g}: {result.best_checkpoint}", file=sys.stderr)
    print(f"results: {result.location}/results.jsonl, results.csv, best.json", file=sys.stderr)
    print(result.best_config)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from ganflow.config import ConfigError
    from ganflow.jobs import JobsError, dashboard_url, follow, submit, wait
    from ganflow.sweep import SweepError

    try:
        job_id = submit("sweep" if args.sweep else "train", args.job, list(args.overrides), args.address,
                        ship_code=not args.no_code, extra_env=args.env or [])
    except ConfigError as err:
        return _die(f"config: {err}")
    except (JobsError, SweepError) as err:
        return _die(str(err))
    print(f"submitted {job_id}: {dashboard_url(args.address, job_id)}", file=sys.stderr)
    print(job_id)
    if not args.follow:
        return 0
    try:
        for chunk in follow(job_id, args.address):
            sys.stderr.write(chunk)
        state = wait(job_id, args.address)
    except JobsError as err:
        return _die(str(err))
    print(f"job {job_id}: {state}", file=sys.stderr)
    return 0 if state == "SUCCEEDED" else EXIT_FAILURE


def cmd_jobs(args: argparse.Namespace) -> int:
    from ganflow import jobs

    try:
        if args.jobs_command == "list":
            rows = jobs.list_jobs(args.address)
            if args.json:
                for row in rows:
                    print(json.dumps(row))
                return 0
            table = [("ID", "STATUS", "KIND", "NAME", "STARTED")] + [
                (r["id"], r["status"], r["kind"] or "-", r["name"] or "-", r["started"]) for r in rows]
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            for row in table:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        elif args.jobs_command == "status":
            info = jobs.status(args.id, args.address)
            print(json.dumps(info) if args.json else f"{info['id']}  {info['status']}  {info['message']}".rstrip())
        elif args.jobs_command == "logs":
            if args.follow:
                for chunk in jobs.follow(args.id, args.address):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            else:
                sys.stdout.write(jobs.logs(args.id, args.address))
        elif args.jobs_command == "stop":
            state = jobs.stop(args.id, args.address)
            print(f"{args.id}  {state}")
            return 0 if state in jobs.TERMINAL else EXIT_FAILURE
    except jobs.JobsError as err:
        return _die(str(err))
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from ganflow.objectstore import StorageError
    from ganflow.runs import list_runs

    try:
        runs = list_runs(args.location)
    except StorageError as err:
        return _die(str(err))
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ganflow.config import WANDB_NAME, WandbConfig
    from ganflow.dashboard import build_workspace, write_spec
    from ganflow.tracking import TrackingError, resolve

    for flag, value in (("PROJECT", args.project), ("--entity", args.entity)):
        if value is not None and not WANDB_NAME.match(value):
            return _die(f"{flag}: {value!r} is not a W&B project or entity name")
    try:
        mode = resolve(WandbConfig(project=args.project, entity=args.entity)).mode
    except TrackingError as err:
        return _die(str(err))
    if mode != "online" or args.out:
        out = Path(args.out or f"wandb-workspace-{args.project}.json")
        write_spec(build_workspace(args.project, args.entity or "ENTITY", args.name), out)
        print(out)
        if mode != "online":
            print("W&B is offline (no WANDB_API_KEY, or WANDB_MODE): wrote the workspace spec; "
                  "run this again online to save it to W&B", file=sys.stderr)
        return 0
    try:
        import wandb

        entity = args.entity or wandb.Api().default_entity
        workspace = build_workspace(args.project, entity, args.name).save()
    except Exception as err:  # network, auth, permissions: wandb raises many kinds
        return _die(f"dashboard: W&B did not save the workspace ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                    EXIT_FAILURE)
    print(workspace.url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganflow", description="Train GANs on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a job (locally, or on the Ray cluster at --address)")
    t.add_argument("job", nargs="?", help="job spec YAML, e.g. jobs/quickstart.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 optim.g.lr=1e-4")
    t.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an in-process local Ray)")
    t.add_argument("--resume", help="run location (directory or s3:// URI) to continue to train.steps")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a run or checkpoint")
    s.add_argument("run", help="run location (its latest checkpoint) or one checkpoint: a directory, an s3:// URI, "
                               "or a W&B artifact wandb:[entity/]project/name[:alias]")
    s.add_argument("--num", type=int, required=True, help="number of samples")
    s.add_argument("--out", required=True, help="output file: .npz (arrays) or .png (grid)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, default=None, help="class label for conditional models")
    s.set_defaults(fn=cmd_sample)

    i = sub.add_parser("interpolate", help="a PNG grid of spherical latent interpolations (a row per class for conditional models)")
    i.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    i.add_argument("--out", required=True, help="output .png")
    i.add_argument("--rows", type=int, default=8, help="latent paths (unconditional models)")
    i.add_argument("--steps", type=int, default=10, help="images along each path")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(fn=cmd_interpolate)

    y = sub.add_parser("synth", help="a labelled synthetic data set (PNG class folders or npz shards), local or s3://")
    y.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    y.add_argument("--out", required=True, help="a new folder or s3:// prefix")
    y.add_argument("--num", type=int, default=None, help="images in all, split evenly over the classes")
    y.add_argument("--per-class", type=int, default=None, help="images of every class (conditional models)")
    y.add_argument("--format", default="png", choices=["png", "npz"])
    y.add_argument("--truncation", type=float, default=None, help="redraw latent entries beyond +-T")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--workers", type=int, default=1, help="Ray workers drawing shards in parallel (RAY_ADDRESS: a cluster's)")
    y.set_defaults(fn=cmd_synth)

    a = sub.add_parser("score", help="anomaly scores of images under a run's GAN (higher: less like its data), to a CSV")
    a.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    a.add_argument("--data", required=True, help="a folder or s3:// prefix of images (class folders are labels) or npz "
                   "files, one .npz, or a built-in data set (digits)")
    a.add_argument("--out", required=True, help="the CSV to write (local or s3://)")
    a.add_argument("--method", default="disc", choices=["disc", "recon"],
                   help="disc: minus D's logit; recon: AnoGAN latent search (slower, usually better)")
    a.add_argument("--steps", type=int, default=200, help="recon: latent-search iterations")
    a.add_argument("--lr", type=float, default=0.05, help="recon: Adam step size on the latents")
    a.add_argument("--feature-weight", type=float, default=0.1, help="recon: weight of D's feature distance")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--workers", type=int, default=1, help="Ray workers scoring batches in parallel (RAY_ADDRESS: a cluster's)")
    a.set_defaults(fn=cmd_score)

    x = sub.add_parser("export", help="the generator (EMA weights) as a standalone TorchScript or ONNX file, checked "
                                      "against PyTorch")
    x.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    x.add_argument("--format", required=True, choices=["torchscript", "onnx"])
    x.add_argument("--out", required=True, help="output file (its calling convention goes to OUT.json)")
    x.add_argument("--atol", type=float, default=1e-4, help="largest difference from PyTorch accepted")
    x.set_defaults(fn=cmd_export)

    e = sub.add_parser("eval", help="score a run's generator; prints one JSON object")
    e.add_argument("run", help="run location (its latest checkpoint) or one checkpoint: a directory, an s3:// URI, "
                               "or a W&B artifact wandb:[entity/]project/name[:alias]")
    e.add_argument("--num", type=int, default=2000, help="samples to generate")
    e.add_argument("--metrics", help="comma-separated: fid, kid, is, pr, classes, modes (default: the run's eval.metrics, "
                                     "else what fits its data)")
    e.add_argument("--extractor", choices=["auto", "inception", "digits"],
                   help="feature extractor (default: the run's eval.extractor; auto: digits classifier for digits)")
    e.add_argument("--inception-weights", help="FID Inception weights: a path or s3:// URI (default: the run's "
                                               "eval.inception_weights, else the cache folder)")
    e.set_defaults(fn=cmd_eval)

    d = sub.add_parser("dashboard", help="save a W&B workspace for a project's runs (offline: write its spec)")
    d.add_argument("project", help="W&B project the runs log to (tracking.wandb.project)")
    d.add_argument("--entity", help="W&B user or team (default: the API key's)")
    d.add_argument("--name", default="ganflow", help="workspace (saved view) name")
    d.add_argument("--out", help="write the workspace spec to this JSON file (always, when offline)")
    d.set_defaults(fn=cmd_dashboard)

    w = sub.add_parser("sweep", help="sweep a job's hyperparameters with Ray Tune; prints best.yaml's location")
    w.add_argument("spec", nargs="?", help="sweep spec YAML (base job, search space, search, scheduler, metric)")
    w.add_argument("overrides", nargs="*", help="dotted.key=value overrides on the base job, for every trial")
    w.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an in-process Ray)")
    w.add_argument("--resume", metavar="LOCATION", help="finish an interrupted sweep: its folder, <storage.uri>/sweeps/<name>-<time> "
                   "(finished trials are kept, unfinished ones go on from their last checkpoints)")
    w.set_defaults(fn=cmd_sweep)

    address_help = "Ray dashboard address, http://HEAD:8265 (default: RAY_ADDRESS, else http://127.0.0.1:8265)"
    b = sub.add_parser("submit", help="submit a job (or, with --sweep, a sweep) to a Ray cluster through the Ray Jobs API; "
                                      "prints the submission id")
    b.add_argument("job", help="job spec YAML (with --sweep: a sweep spec), validated here first")
    b.add_argument("overrides", nargs="*", help="dotted overrides on the job")
    b.add_argument("--address", help=address_help)
    b.add_argument("--sweep", action="store_true", help="JOB is a sweep spec: the cluster runs `ganflow sweep`")
    b.add_argument("--env", action="append", metavar="NAME",
                   help="also pass this environment variable (by name; repeatable). S3 and W&B credentials the job "
                        "needs are passed without asking")
    b.add_argument("--no-code", action="store_true", help="use the ganflow installed on the cluster instead of sending this one")
    b.add_argument("--follow", action="store_true", help="stream the job's log until it ends; exit 0 only if it succeeded")
    b.set_defaults(fn=cmd_submit)

    j = sub.add_parser("jobs", help="ganflow jobs on a Ray cluster: list, status, logs, stop")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    for name, helptext in (("list", "every job the cluster has run"), ("status", "one job's status"),
                           ("logs", "one job's log"), ("stop", "stop a job and wait until it has stopped")):
        c = jsub.add_parser(name, help=helptext)
        if name != "list":
            c.add_argument("id", help="submission id, as `ganflow submit` printed it")
        c.add_argument("--address", help=address_help)
        if name in ("list", "status"):
            c.add_argument("--json", action="store_true", help="JSON output")
        if name == "logs":
            c.add_argument("--follow", "-f", action="store_true", help="keep streaming until the job ends")
        c.set_defaults(fn=cmd_jobs)

    r = sub.add_parser("runs", help="runs in a storage location")
    rsub = r.add_subparsers(dest="runs_command", required=True)
    rl = rsub.add_parser("list", help="runs under a location, with their status, step and latest metrics")
    rl.add_argument("location", help="storage root, experiment or run: a directory or s3://bucket/prefix")
    rl.add_argument("--json", action="store_true", help="one JSON object per run")
    rl.set_defaults(fn=cmd_runs_list)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "sweep"):
        from ganflow import train

        train.STOP_ON_SIGTERM = True
        train.stop_on_sigterm()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
