"""The private Ray APIs ganflow touches, each behind a function with a fallback: a Ray release that
moves one costs a warning or a log line, never a run. Checked against ray 2.60.0."""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict

log = logging.getLogger("ganflow.ray")


def quiet_ray_train_report_logs() -> None:
    """Ray Train V2 logs every report at INFO, metrics dict included; our progress line says it better."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        log.warning("this Ray moved ray.train.v2._internal.execution.context: its report log lines stay on")
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def use_auth_token_if_there() -> None:
    """Ray's token authentication: like `ray.init` connecting to a cluster, send the token when one
    is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:
        log.warning("this Ray has no ray._private.authentication: no token is sent (a cluster that wants one refuses)")
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def on_train_worker_main_thread(fn: Callable[[], None]) -> bool:
    """Run `fn` on the main thread of this Ray Train worker's actor, where signal handlers can be set:
    Ray Train V2 runs the training function in a thread of its own, and the actor's methods (its
    `execute` among them) on the main thread. False, with a warning, where that is not possible."""
    try:
        import ray

        actor = ray.get_runtime_context().current_actor
        ray.get(actor.execute.remote(fn), timeout=60)
    except Exception as err:  # not in a Ray Train worker, or a Ray without RayTrainWorker.execute
        log.warning("this Ray runs no function on its Train worker's main thread (%s): no SIGTERM handler",
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        return False
    return True


REPORT_POLL_S = "0.5"


def train_report_poll_env() -> Dict[str, str]:
    """Ray Train V2's controller collects workers' reports when it polls them, every 2 s by default,
    and a worker's next report waits for the last to be collected: up to 2 s per checkpoint. The
    env_vars for ganflow's runtime envs that make it poll every 0.5 s (unless the user set it)."""
    try:
        from ray.train.v2._internal.constants import HEALTH_CHECK_INTERVAL_S_ENV_VAR as name
    except ImportError:
        log.warning("this Ray moved ray.train.v2._internal.constants: reports wait for its default poll interval")
        return {}
    return {name: os.environ.get(name, REPORT_POLL_S)}


WORKER_NICENESS = "RAY_worker_niceness"


def run_local_workers_at_normal_priority() -> None:
    """Ray starts its workers at nice 15, so on a machine of our own every other busy process (Ray's
    own raylet, GCS and dashboard among them) takes CPU from training first: ~5-10% of a small
    model's steps on 2 cores. For the Ray that ganflow starts in-process, the workers run at the
    priority a plain PyTorch script has, unless the user set it. Ray reads its private config
    `worker_niceness` from this variable when its processes start; a Ray without the key ignores it."""
    os.environ.setdefault(WORKER_NICENESS, "0")
