"""The private Ray APIs ganflow touches, each behind a function with a fallback: a Ray release that
moves one costs a warning or a log line, never a run. Checked against ray 2.60.0."""

from __future__ import annotations

import logging

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
