"""`ganflow` command line: parses arguments, then hands them to the verb's module in
ganflow.commands (imported only when that verb runs, so `ganflow --help` stays quick).

Exit codes: 0 success, 2 bad input (config, arguments, missing run), 1 training failure.
`train` prints the run location as the last line of stdout.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from typing import List, Optional

from ganflow.core.trace import mark
from ganflow.present.logs import configured as configured_logging


ADDRESS_HELP = "Ray dashboard address, http://HEAD:8265 (default: RAY_ADDRESS, else http://127.0.0.1:8265)"


def _train(sub) -> None:
    """`train JOB [overrides] [--address] [--resume]`: the contract's first verb."""
    t = sub.add_parser("train", help="train a job (locally, or on the Ray cluster at --address)")
    t.add_argument("job", nargs="?", help="job spec YAML, e.g. jobs/quickstart.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 optim.g.lr=1e-4")
    t.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an in-process local Ray)")
    t.add_argument("--resume", help="run location (directory or s3:// URI) to continue to train.steps")
    t.add_argument("--force-takeover", action="store_true",
                   help="with --resume: take the run's lease from a writer that is gone but whose lease is not yet stale "
                        "(another host's crashed process); never while that writer still runs")
    t.add_argument("--dry-run", action="store_true",
                   help="print the resolved job (every default filled in, credentials redacted) and exit; starts nothing")
    t.set_defaults(verb="train:main")


def _sample(sub) -> None:
    """`sample RUN --num N --out FILE`: the contract's sample file (.npz) or a grid (.png)."""
    s = sub.add_parser("sample", help="draw samples from a run or checkpoint")
    s.add_argument("run", help="run location (its latest checkpoint) or one checkpoint: a directory, an s3:// URI, "
                               "or a W&B artifact wandb:[entity/]project/name[:alias]")
    s.add_argument("--num", type=int, required=True, help="number of samples")
    s.add_argument("--out", required=True, help="output file: .npz (arrays) or .png (grid)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, default=None, help="class label for conditional models")
    s.add_argument("--noise", choices=("random", "const"), default="random",
                   help="a generator with noise inputs (stylegan2): fresh noise per sample (as evaluation) or its constant noise")
    s.add_argument("--truncation", type=float, default=None,
                   help="psi in [0, 1]: styles pulled towards the mean style (models with a style space: stylegan2)")
    s.set_defaults(verb="sample:main")


def _interpolate(sub) -> None:
    """`interpolate RUN --out PNG`: spherical latent paths."""
    i = sub.add_parser("interpolate", help="a PNG grid of spherical latent interpolations (a row per class for conditional models)")
    i.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    i.add_argument("--out", required=True, help="output .png")
    i.add_argument("--rows", type=int, default=8, help="latent paths (unconditional models)")
    i.add_argument("--steps", type=int, default=10, help="images along each path")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(verb="interpolate:main")


def _synth(sub) -> None:
    """`synth RUN --out DIR`: a labelled synthetic data set."""
    y = sub.add_parser("synth", help="a labelled synthetic data set (PNG class folders or npz shards), local or s3://")
    y.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    y.add_argument("--out", required=True, help="a new folder or s3:// prefix")
    y.add_argument("--num", type=int, default=None, help="images in all, split evenly over the classes")
    y.add_argument("--per-class", type=int, default=None, help="images of every class (conditional models)")
    y.add_argument("--format", default="png", choices=["png", "npz"])
    y.add_argument("--truncation", type=float, default=None, help="redraw latent entries beyond +-T")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--workers", type=int, default=1, help="Ray workers drawing shards in parallel (RAY_ADDRESS: a cluster's)")
    y.set_defaults(verb="synth:main")


def _score(sub) -> None:
    """`score RUN --data D --out CSV`: anomaly scores."""
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
    a.set_defaults(verb="score:main")


def _export(sub) -> None:
    """`export RUN --format F --out FILE`: a standalone generator file."""
    x = sub.add_parser("export", help="the generator (EMA weights) as a standalone TorchScript or ONNX file, checked "
                                      "against PyTorch")
    x.add_argument("run", help="run location or one checkpoint: a directory, an s3:// URI, or a W&B artifact")
    x.add_argument("--format", required=True, choices=["pt2", "torchscript", "onnx"],
                   help="pt2 (torch.export, loads with torch.export.load), torchscript (deprecated by PyTorch), onnx")
    x.add_argument("--out", required=True, help="output file (its calling convention goes to OUT.json)")
    x.add_argument("--atol", type=float, default=1e-4, help="largest difference from PyTorch accepted")
    x.set_defaults(verb="export:main")


def _eval(sub) -> None:
    """`eval RUN`: one JSON object of metric values."""
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
    e.add_argument("--reference", help="published reference statistics to compute FID against: an .npz of mu and "
                                       "sigma, a path or s3:// URI (default: the run's data, or its prepared set's)")
    e.set_defaults(verb="eval:main")


def _dashboard(sub) -> None:
    """`dashboard PROJECT`: a W&B workspace."""
    d = sub.add_parser("dashboard", help="save a W&B workspace for a project's runs (offline: write its spec)")
    d.add_argument("project", help="W&B project the runs log to (tracking.wandb.project)")
    d.add_argument("--entity", help="W&B user or team (default: the API key's)")
    d.add_argument("--name", default="ganflow", help="workspace (saved view) name")
    d.add_argument("--out", help="write the workspace spec to this JSON file (always, when offline)")
    d.set_defaults(verb="dashboard:main")


def _sweep(sub) -> None:
    """`sweep SPEC [overrides]`: Ray Tune."""
    w = sub.add_parser("sweep", help="sweep a job's hyperparameters with Ray Tune; prints best.yaml's location")
    w.add_argument("spec", nargs="?", help="sweep spec YAML (base job, search space, search, scheduler, metric)")
    w.add_argument("overrides", nargs="*", help="dotted.key=value overrides on the base job, for every trial")
    w.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an in-process Ray)")
    w.add_argument("--resume", metavar="LOCATION", help="finish an interrupted sweep: its folder, <storage.uri>/sweeps/<name>-<time> "
                   "(finished trials are kept, unfinished ones go on from their last checkpoints)")
    w.add_argument("--json", action="store_true", help="print the best trial as one JSON object (its value, checkpoint, "
                                                       "best.yaml) instead of best.yaml's location")
    w.set_defaults(verb="sweep:main")


def _submit(sub) -> None:
    """`submit JOB --address URL`: the Ray Jobs API."""
    b = sub.add_parser("submit", help="submit a job (or, with --sweep, a sweep) to a Ray cluster through the Ray Jobs API; "
                                      "prints the submission id")
    b.add_argument("job", nargs="?", help="job spec YAML (with --sweep: a sweep spec), validated here first")
    b.add_argument("--resume", metavar="RUN", help="continue this run on the cluster (its s3:// URI or shared path): its "
                                                  "own config.yaml with the overrides on top, as `train --resume`")
    b.add_argument("overrides", nargs="*", help="dotted overrides on the job")
    b.add_argument("--address", help=ADDRESS_HELP)
    b.add_argument("--sweep", action="store_true", help="JOB is a sweep spec: the cluster runs `ganflow sweep`")
    b.add_argument("--env", action="append", metavar="NAME[=VALUE]",
                   help="also pass this environment variable (by name, from here; or NAME=VALUE, e.g. "
                        "NCCL_SOCKET_IFNAME=eth0; repeatable). S3 and W&B credentials the job needs are passed without asking")
    b.add_argument("--no-code", action="store_true", help="use the ganflow installed on the cluster instead of sending this one")
    b.add_argument("--no-wait", action="store_true", help="print the submission id and return (as `ray job submit --no-wait`); "
                   "by default the job's log streams until it ends, and the exit code is 0 only if it succeeded")
    b.add_argument("--json", action="store_true", help="print one JSON object (submission_id, dashboard, status: the end "
                                                       "state, or PENDING with --no-wait) instead of the bare id")
    b.add_argument("--follow", action="store_true", help=argparse.SUPPRESS)  # the default since 0.2; accepted for old scripts
    b.set_defaults(verb="submit:main")


def _jobs(sub) -> None:
    """`jobs list|status|logs|stop`: submitted jobs."""
    j = sub.add_parser("jobs", help="ganflow jobs on a Ray cluster: list, status, logs, stop")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    for name, helptext in (("list", "every job the cluster has run"), ("status", "one job's status"),
                           ("logs", "one job's log"), ("stop", "stop a job and wait until it has stopped")):
        c = jsub.add_parser(name, help=helptext)
        if name != "list":
            c.add_argument("id", help="submission id, as `ganflow submit` printed it")
        c.add_argument("--address", help=ADDRESS_HELP)
        if name in ("list", "status"):
            c.add_argument("--json", action="store_true", help="JSON output")
        if name == "logs":
            c.add_argument("--follow", "-f", action="store_true", help="keep streaming until the job ends")
        c.set_defaults(verb="jobs:main")


def _data(sub) -> None:
    """`data prepare SOURCE --out DIR --resolution R`: prepared data sets."""
    dp = sub.add_parser("data", help="prepared data sets: images cropped and resized once into uint8 shards")
    dsub = dp.add_subparsers(dest="data_command", required=True)
    pr = dsub.add_parser("prepare", help="prepare a folder, s3:// prefix or StyleGAN dataset_tool zip of images for "
                                         "training (data.name=prepared data.path=OUT); resumable, manifest last")
    pr.add_argument("source", help="a folder or s3:// prefix of PNG/JPEG (class subfolders are labels), or a dataset_tool .zip")
    pr.add_argument("--out", required=True, help="where the prepared set goes: a directory or s3://bucket/prefix")
    pr.add_argument("--resolution", type=int, required=True, help="side of the square images (centre crop, Lanczos)")
    pr.add_argument("--channels", type=int, default=3, choices=(1, 3), help="1 (grey) or 3 (RGB; default)")
    pr.add_argument("--labels", default="auto", help="auto (a zip's dataset.json, else class folders when every image "
                                                     "is in one), folders, none, or a dataset.json file")
    pr.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    pr.add_argument("--on-error", default="skip", choices=("skip", "fail"),
                    help="a file that does not decode (not an image, truncated, over the bounds of README's Trust "
                         "section): skip it (counted and listed in the manifest; default) or fail naming it")
    pr.add_argument("--workers", type=int, default=None, help="Ray workers writing shards (default: 1 for up to 2 "
                                                              "shards, else one per CPU; 1 runs in this process)")
    pr.add_argument("--address", default=None, help="Ray cluster to run the workers on (default: RAY_ADDRESS, else a "
                                                    "local Ray); the source and --out must be reachable from its nodes")
    pr.add_argument("--reference", default="all", help="reference statistics for FID over all images, the first N "
                                                       "of a fixed shuffle, or none (default all)")
    pr.add_argument("--extractor", default="inception", choices=("inception", "digits"),
                    help="the features the reference statistics are of (default inception)")
    pr.add_argument("--inception-weights", default=None, help="as eval.inception_weights (default: found as training finds them)")
    pr.set_defaults(verb="data:main")


def _runs(sub) -> None:
    """`runs list|show`: runs in a storage location."""
    r = sub.add_parser("runs", help="runs in a storage location")
    rsub = r.add_subparsers(dest="runs_command", required=True)
    rl = rsub.add_parser("list", help="runs under a location: status (stale when a running run's heartbeat stopped), "
                                      "step, latest metrics, best evaluation")
    rl.add_argument("location", help="storage root, experiment or run: a directory or s3://bucket/prefix")
    rl.add_argument("--json", action="store_true", help="one JSON object per run")
    rl.set_defaults(verb="runs:main")
    rs = rsub.add_parser("show", help="one run at a glance: status, config, latest and best values, newest checkpoint, "
                                      "its curves as a PNG, and its sample grids over time beside it (<plot>-samples.png)")
    rs.add_argument("run", help="the run location: a directory or an s3:// URI")
    rs.add_argument("--plot", help="where to write the PNG of the loss, throughput and evaluation curves "
                                   "(default: <run_id>-curves.png here; with --json only when given)")
    rs.add_argument("--json", action="store_true", help="one JSON object: status, step, job, latest and best values, "
                                                        "newest checkpoint")
    rs.set_defaults(verb="runs:main")


def _import(sub) -> None:
    """`import PKL --out RUN_DIR [overrides]`: official weights as a ganflow run."""
    m = sub.add_parser("import", help="a StyleGAN2-ADA network pickle as a ganflow run (read as data: nothing in it runs)")
    m.add_argument("pkl", help="the network pickle (.pkl), e.g. an NVlabs release or a StyleGAN2-ADA snapshot")
    m.add_argument("--out", required=True, help="the new run directory")
    m.add_argument("overrides", nargs="*", help="job overrides, e.g. data.path=images/ train.batch_size=32")
    m.set_defaults(verb="imports:main")


def _serve(sub) -> None:
    """`serve RUN`: the generator behind HTTP with Ray Serve."""
    v = sub.add_parser("serve", help="serve a run's generator over HTTP with Ray Serve: GET /sample?n=16&label=3&seed=7"
                                     "&format=png|npz, GET /health")
    v.add_argument("run", help="run location (its newest checkpoint), one checkpoint, s3:// or wandb:project/name:alias")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for others)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--replicas", type=int, default=1, help="replicas of the generator (default 1)")
    v.add_argument("--autoscale", metavar="MIN,MAX", help="Ray Serve autoscaling between MIN and MAX replicas instead")
    v.add_argument("--cpus-per-replica", type=float, default=1.0)
    v.add_argument("--gpus-per-replica", type=float, default=0.0, help="e.g. 1 (or 0.5 to share a GPU)")
    v.add_argument("--max-batch", type=int, default=16, help="requests batched into one forward pass (serve.batch)")
    v.add_argument("--reload-every", type=float, default=None, metavar="SECONDS",
                   help="look for a newer checkpoint of the run this often and serve it (default: never)")
    v.add_argument("--address", default=None, help="Ray cluster to serve on (default: RAY_ADDRESS, else an in-process Ray)")
    v.set_defaults(verb="serve:main")


VERBS = (_train, _sample, _import, _interpolate, _synth, _score, _export, _eval, _dashboard, _sweep, _submit, _jobs, _data,
         _runs, _serve)


class _Version(argparse.Action):
    """--version, its number read only when asked for (package metadata costs start-up time)."""

    def __call__(self, parser, namespace, values, option_string=None):
        import ganflow

        print(f"ganflow {ganflow.__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganflow", description="Train GANs on Ray.",
                                epilog="-v / -q (anywhere, repeatable): more or less of what ganflow says on stderr")
    p.add_argument("--version", action=_Version, nargs=0, help="print ganflow's version and exit")
    try:  # shell completion: `ganflow --print-completion bash > /etc/bash_completion.d/ganflow` (or zsh, tcsh)
        import shtab

        shtab.add_argument_to(p, ["--print-completion"])
    except ImportError:
        pass
    sub = p.add_subparsers(dest="command", required=True)
    for add in VERBS:  # each adds its sub-command's parser, with set_defaults(verb="module:function")
        add(sub)
    return p


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags and dotted overrides in any order (`train JOB --address A train.steps=5`), as Ray and
    Hydra users type them: what argparse leaves over after the flags are overrides, when the verb
    takes them; anything else is argparse's own usage error (exit 2)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.parse_args(argv)  # exits 2 naming what it does not know
    return args


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota, file size limit: one line, not a traceback


def _verbosity(argv: List[str]) -> tuple:
    """(-v minus -q counts, the rest): taken wherever they stand (`ganflow -q train ...`,
    `ganflow train JOB -q`), as the global flags of tools like pip and ray."""
    level, rest = 0, []
    for arg in argv:
        if arg in ("-v", "--verbose") or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            level += len(arg) - 1 if arg.startswith("-v") else 1
        elif arg in ("-q", "--quiet") or (arg.startswith("-q") and set(arg[1:]) == {"q"}):
            level -= len(arg) - 1 if arg.startswith("-q") else 1
        else:
            rest.append(arg)
    return level, rest


def main(argv: Optional[List[str]] = None) -> int:
    mark("cli")
    verbosity, argv = _verbosity(sys.argv[1:] if argv is None else list(argv))
    with configured_logging(verbosity):
        return _run(parse(argv))


def _run(args: argparse.Namespace) -> int:
    module, _, function = args.verb.partition(":")
    verb = getattr(importlib.import_module(f"ganflow.commands.{module}"), function)
    mark("imports")
    try:
        if args.command in ("train", "sweep", "serve"):  # a SIGTERM (Ray's `jobs stop`, a scheduler) stops the run cleanly
            from ganflow.ray.signals import SigtermStop

            stop = SigtermStop()
            stop.install()
            return verb(args, stop=stop)
        return verb(args)
    except OSError as err:
        if err.errno not in FULL:
            raise
        from ganflow.commands.exits import EXIT_FAILURE, die

        why = {errno.EFBIG: "file too large (the file size limit: ulimit -f)"}.get(err.errno, os.strerror(err.errno).lower())
        where = f" writing {err.filename}" if err.filename else ""
        return die(f"{why}{where}; make room and run it again (nothing half-written was kept)", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
