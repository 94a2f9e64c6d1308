"""Finding or starting the Ray a command runs on, and saying up front when it cannot place a job."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

from ganflow.config import ConfigError, JobConfig, ScalingConfig
from ganflow.ray.compat import run_local_workers_at_normal_priority, train_report_poll_env
from ganflow.ray.hooks import PIN_STATE_API
from ganflow.store import store_options


def runtime_env() -> dict:
    """What every Ray process of ours gets: the State API pinned to this cluster, Ray Train's report poll."""
    return {**PIN_STATE_API, "env_vars": train_report_poll_env()}


class RayAddressError(ValueError):
    """A cluster address of the wrong form for the verb; the message says which form it needs."""


def address_form(address: str) -> str:
    """"jobs" (http(s)://HEAD:8265, the dashboard's Jobs API), "client" (ray://HEAD:10001) or
    "gcs" (HEAD:6379, or `auto`): the three forms Ray users carry around."""
    if address.startswith(("http://", "https://")):
        return "jobs"
    return "client" if address.startswith("ray://") else "gcs"


def driver_address(address: Optional[str], verb: str) -> Optional[str]:
    """The cluster a driver joins (`--address`, else RAY_ADDRESS), or None for an in-process Ray. A
    Jobs API address cannot be joined: RayAddressError says what to give instead."""
    where, given = ("--address", address) if address else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"))
    if given and address_form(given) == "jobs":
        raise RayAddressError(
            f"{where} {given}: that is a Ray Jobs API (dashboard) address; `ganflow {verb}` joins a cluster at its "
            f"GCS address (HEAD:6379) or through Ray Client (ray://HEAD:10001)"
            + (f"; to run the job there through the Jobs API: ganflow submit JOB.yaml --address {given}"
               if verb in ("train", "sweep") else ""))
    return given or None


def ensure_ray(address: Optional[str] = None, verb: str = "train") -> bool:
    """Connect to `address` (or RAY_ADDRESS), else start an in-process local Ray. True if we did either."""
    import ray

    if ray.is_initialized():
        return False
    address = driver_address(address, verb)
    if not address:
        start_local_ray()
        return True
    # Workers are told their cluster's address (the State API otherwise asks the machine's last `ray start`);
    # a submitted job's come from the submission, and Ray refuses the same runtime_env key twice.
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    ray.init(address=address, logging_level=logging.WARNING, **({} if in_job else {"runtime_env": runtime_env()}))
    return True


def start_local_ray(**options: Any) -> None:
    """A new Ray of our own ("local": never the last `ray start` cluster Ray would find), with its
    dashboard (Ray Train's placement-group cleaner asks its State API) and its workers pinned to
    it, at the priority of a plain script (compat.run_local_workers_at_normal_priority); `options`
    go to `ray.init` (num_cpus, ...)."""
    import ray

    run_local_workers_at_normal_priority()
    # No dashboard_port: Ray's dashboard then binds 8265 or the next free port itself. A port chosen
    # here and handed to Ray could be taken by another ganflow starting at the same moment.
    ray.init(**{"address": "local", "include_dashboard": True, "logging_level": logging.WARNING,
                "configure_logging": True, "runtime_env": runtime_env(), **options})


def check_fits_local_ray(scaling: ScalingConfig, address: Optional[str] = None) -> None:
    """Ray Train waits forever (retrying every 60 s) for workers a fixed cluster cannot place; on
    the in-process Ray, or one already running here, say so up front instead. A remote cluster may
    autoscale, so it is left to Ray."""
    import ray

    if ray.is_initialized():
        have = ray.cluster_resources()
    elif address or os.environ.get("RAY_ADDRESS"):
        return
    else:
        import torch

        have = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    per_worker = {"CPU": 1.0, **({"GPU": 1.0} if scaling.use_gpu else {}), **scaling.resources_per_worker}
    for res, amount in per_worker.items():
        need = amount * scaling.min_workers  # an elastic group starts with what fits, from its minimum
        if need > have.get(res, 0.0) + 1e-9:
            key = "scaling.use_gpu" if res == "GPU" and res not in scaling.resources_per_worker \
                else f"scaling.resources_per_worker.{res}"
            raise ConfigError(f"{key}: {scaling.min_workers} workers x {amount:g} {res} need {need:g}, "
                              f"the local Ray has {have.get(res, 0.0):g}; lower {key} or scaling.num_workers")


@contextlib.contextmanager
def ray_session(address: Optional[str], verb: str, stop=None) -> Iterator[None]:
    """Ray for one driver (`ensure_ray`), shut down at the end if this started or joined it. `stop`
    (the CLI's SigtermStop) is installed again once Ray is up: `ray.init`'s core worker replaces
    the process's SIGTERM handler with its own."""
    import ray

    there = ray.is_initialized()
    try:
        started = ensure_ray(address, verb)
    except BaseException:  # stopped or failed half-way up (a SIGTERM inside ray.init): what started goes down
        if not there:
            ray.shutdown()
        raise
    if stop is not None:
        stop.install()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def preflight(cfg: JobConfig, address: Optional[str], verb: str):
    """What a train or a sweep checks before Ray starts or anything is written, the same for both:
    the address's form, that a worker fits the local Ray, the FID weights its evaluation needs and
    that data.path holds images. Returns the job's S3 options."""
    from ganflow import data
    from ganflow.metrics.scoring import check_extractor

    driver_address(address, verb)  # a Jobs API address: one line, before anything is written
    check_fits_local_ray(cfg.scaling, address)
    options = store_options(cfg.storage)
    if cfg.eval.every:  # weights missing offline: say where to put them before anything is written
        check_extractor(cfg, options)
    data.spec(cfg.data.name).check(cfg.data, options)  # a local folder looked at; a bucket's prefix listed later
    if cfg.train.init_from:  # missing, unreadable or refused: exit 2 here (a shape mismatch: the workers say so)
        from ganflow.job import init_networks

        init_networks(cfg, options)
    return options
