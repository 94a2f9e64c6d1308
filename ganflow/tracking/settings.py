"""W&B settings: the job's tracking.wandb section with mode and directory resolved from the
environment, checked on the driver before anything is written."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from ganflow.config import WANDB_NAME, JobConfig, WandbConfig

log = logging.getLogger("ganflow.tracking")

ONLINE_CHECK_TIMEOUT_S = 20.0
WANDB_MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


class TrackingError(RuntimeError):
    """W&B cannot be used as configured; the message names the setting and the fix."""


@dataclass(frozen=True)
class WandbSettings:
    """What rank 0 needs to open the W&B run: the config's section with mode and dir resolved."""

    mode: str  # online | offline | disabled
    dir: str  # absolute; W&B writes <dir>/wandb/offline-run-<time>-<id>/
    project: str
    entity: Optional[str]
    group: Optional[str]
    job_type: str
    tags: List[str]
    notes: Optional[str]
    on_error: str
    log_checkpoints: bool
    upload_generator: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def resolve(w: WandbConfig, env: Optional[Dict[str, str]] = None) -> WandbSettings:
    """Each setting from the job config when it sets one, else W&B's environment variable, else
    ganflow's default. Mode: else online with WANDB_API_KEY and offline without (never a login
    prompt). Dir: else the working directory."""
    env = os.environ if env is None else env
    mode = w.mode
    if mode is None and env.get("WANDB_MODE"):
        mode = WANDB_MODE_ALIASES.get(env["WANDB_MODE"].strip().lower())
        if mode is None:
            raise TrackingError(f"WANDB_MODE: unknown value {env['WANDB_MODE']!r}; use online, offline or disabled")
    if mode is None:
        mode = "online" if env.get("WANDB_API_KEY") else "offline"
    directory = os.path.abspath(os.path.expanduser(w.dir or env.get("WANDB_DIR") or os.getcwd()))
    project = w.project or env.get("WANDB_PROJECT") or "ganflow"
    if not WANDB_NAME.match(project):
        raise TrackingError(f"WANDB_PROJECT: {project!r} is not a W&B project name (letters, digits, '_', '-', '.')")
    tags = w.tags if w.tags is not None else [t.strip() for t in env.get("WANDB_TAGS", "").split(",") if t.strip()]
    return WandbSettings(mode=mode, dir=directory, project=project, entity=w.entity or env.get("WANDB_ENTITY") or None,
                         group=w.group or env.get("WANDB_RUN_GROUP") or None,
                         job_type=w.job_type or env.get("WANDB_JOB_TYPE") or "train", tags=list(tags), notes=w.notes,
                         on_error=w.on_error, log_checkpoints=w.log_checkpoints, upload_generator=w.upload_generator)


def _check(s: WandbSettings) -> None:
    """Raise TrackingError if W&B could not start as `s` says."""
    try:
        Path(s.dir, "wandb").mkdir(parents=True, exist_ok=True)
        probe = Path(s.dir, "wandb", f".ganflow-probe-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TrackingError(f"tracking.wandb.dir: cannot write W&B files under {s.dir} ({err.strerror or err}); "
                            "set tracking.wandb.dir (or WANDB_DIR) to a writable directory") from None
    if s.mode == "online":
        import wandb

        try:
            wandb.Api(timeout=ONLINE_CHECK_TIMEOUT_S).viewer  # noqa: B018 (a request: key and server check)
        except Exception as err:  # wandb raises several kinds; the message is what matters
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TrackingError(f"tracking.wandb.mode: online, but W&B did not accept the key or could not be "
                                f"reached ({first}); set tracking.wandb.mode=offline and `wandb sync` later") from None


def prepare(cfg: JobConfig) -> WandbSettings:
    """The settings rank 0 will use, checked on the driver before anything is written: a broken
    W&B raises TrackingError (on_error=fail) or is disabled with a warning (on_error=disable)."""
    s = resolve(cfg.tracking.wandb)
    if s.mode == "disabled":
        return s
    try:
        _check(s)
    except TrackingError as err:
        if s.on_error == "fail":
            raise
        log.warning("W&B tracking disabled: %s", err)
        return replace(s, mode="disabled")
    return s
