"""ganflow jobs on a Ray cluster, through the Ray Jobs API (`ganflow submit`, `ganflow jobs`).

The job (or sweep) is validated on the submitting machine before anything is sent. The
cluster gets a working directory holding the resolved config (credentials redacted) and runs
`python -m ganflow.cli train job.yaml` (or `sweep sweep.yaml`) in it, with this ganflow's code as
a `py_modules` package unless the cluster's image is to be trusted (`--no-code`). Credentials
travel only as `env_vars`, and only the named ones the job needs, read from the submitter's
environment; the entrypoint and the metadata never hold one. Note that Ray shows a job's
`runtime_env` (env_vars included) to whoever can read its dashboard: on a shared cluster, prefer
an instance profile or a Kubernetes Secret (see cluster/).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from ganflow.config import JobConfig
from ganflow.ray.cluster import address_form
from ganflow.ray.compat import use_auth_token_if_there
from ganflow.ray.compat import train_report_poll_env
from ganflow.ray.hooks import PIN_STATE_API
from ganflow.store import is_s3

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
S3_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
WANDB_VARS = ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_GROUP",
              "WANDB_TAGS", "WANDB_JOB_TYPE")


class JobsError(RuntimeError):
    """The cluster, a job id or the submission is wrong; the message says which and the fix."""


def _state(status: Any) -> str:
    """'SUCCEEDED' from a JobStatus (a str enum) or its name."""
    return str(getattr(status, "value", status)).split(".")[-1]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def address_of(address: Optional[str]) -> str:
    """`--address`, else RAY_ADDRESS (as `ray job` reads it), else the local default dashboard. The
    Jobs API lives on the dashboard: a GCS or Ray Client address is refused, saying so."""
    where, given = ("--address", address) if address else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"))
    if given and address_form(given) != "jobs":
        raise JobsError(f"{where} {given}: ganflow submit and ganflow jobs talk to the Ray Jobs API on the head's "
                        "dashboard: give http://HEAD:8265 (what `ray job submit` takes)")
    return given or "http://127.0.0.1:8265"


def client(address: Optional[str] = None):
    from ray.job_submission import JobSubmissionClient

    where = address_of(address)
    use_auth_token_if_there()
    try:
        return JobSubmissionClient(where)
    except Exception as err:  # ConnectionError, ValueError for a malformed address, ...
        if type(err).__name__ == "AuthenticationError":
            raise JobsError(f"--address {where}: the cluster wants Ray's authentication token; put it in "
                            "~/.ray/auth_token or RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it)") from None
        raise JobsError(f"--address {where}: no Ray dashboard answers there ({_first_line(err)}); "
                        "give the head's dashboard address, e.g. http://HEAD:8265, or set RAY_ADDRESS") from None


def _call(what: str, job_id: str, fn, *args):
    try:
        return fn(*args)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise JobsError(f"job {job_id}: no such job on this cluster (`ganflow jobs list` shows them)") from None
        raise JobsError(f"{what} {job_id}: {_first_line(err)}") from None


# --- what is sent -----------------------------------------------------------------------------


def needed_env(cfg: JobConfig, extra: List[str] = ()) -> Dict[str, str]:
    """The named variables this job needs on the cluster, from this environment: S3 credentials
    when any s3:// URI appears in the job, W&B's settings when it tracks and its API key only when
    it tracks online, and any named with --env (NAME, from here, or NAME=VALUE: a cluster's own
    setting, such as NCCL_SOCKET_IFNAME=eth0)."""
    from ganflow.tracking.settings import TrackingError, resolve

    names: List[str] = []
    if any(isinstance(v, str) and is_s3(v) for v in _strings(cfg.to_dict())):
        names += S3_VARS
    try:
        mode = resolve(cfg.tracking.wandb).mode
    except TrackingError as err:
        raise JobsError(str(err)) from None
    if mode != "disabled":
        names += [name for name in WANDB_VARS if name != "WANDB_API_KEY" or mode == "online"]
    given = dict(item.split("=", 1) for item in extra if "=" in item)
    names += [item for item in extra if "=" not in item]
    return {**{name: os.environ[name] for name in dict.fromkeys(names) if name in os.environ}, **given}


def _strings(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            yield from _strings(value)
    else:
        yield node


def check_shared_paths(cfg: JobConfig) -> None:
    """A relative local path means the submitter's machine; on the cluster it would land in the
    job's scratch working directory and be lost with it."""
    for key, value in (("storage.uri", cfg.storage.uri), ("data.path", cfg.data.path)):
        if value and not is_s3(value) and not os.path.isabs(os.path.expanduser(value)):
            raise JobsError(f"{key}: {value!r} is a path relative to this machine; a cluster job needs storage every "
                            f"node reaches: {key}=s3://bucket/prefix, or an absolute path on a shared filesystem")


def git_commit(where: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if out.returncode != 0:
        return ""
    dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


@dataclass
class Submission:
    entrypoint: str
    runtime_env: Dict[str, Any]
    metadata: Dict[str, str]
    submission_id: str


def staged(kind: str, name: str, spec: Path, entrypoint: str, cfg: JobConfig, staging: Path, ship_code: bool,
                extra_env: List[str]) -> Submission:
    # pin_state_api: Ray Train's placement-group cleaner must ask this cluster, not another on the node
    runtime_env: Dict[str, Any] = {"working_dir": str(staging), **PIN_STATE_API}
    if ship_code:
        runtime_env["py_modules"] = [str(Path(__file__).resolve().parents[1])]  # this ganflow package
        runtime_env["excludes"] = ["__pycache__", "*.pyc"]
    env = {**train_report_poll_env(), **needed_env(cfg, extra_env)}
    if env:
        runtime_env["env_vars"] = env
    metadata = {"ganflow": kind, "name": name, "spec": spec.name, "user": getpass.getuser(),
                "git_commit": git_commit(spec.resolve().parent)}
    submission_id = f"ganflow-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    return Submission(entrypoint, runtime_env, metadata, submission_id)


def submit_staged(sub: Submission, address: Optional[str] = None) -> str:
    """Send a staged submission; returns its id."""
    jobs = client(address)
    try:
        return jobs.submit_job(entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, metadata=sub.metadata,
                               submission_id=sub.submission_id)
    except Exception as err:
        raise JobsError(f"submit: the cluster refused the job ({_first_line(err)})") from None


def dashboard_url(address: Optional[str], submission_id: str) -> str:
    base = address_of(address).rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return f"{base}/#/jobs/{submission_id}"


# --- watching and stopping ----------------------------------------------------------------------


def list_jobs(address: Optional[str] = None) -> List[Dict[str, Any]]:
    jobs = client(address)
    try:
        details = jobs.list_jobs()
    except Exception as err:
        raise JobsError(f"jobs list: {_first_line(err)}") from None
    rows = []
    for d in sorted(details, key=lambda d: d.start_time or 0):
        rows.append({"id": d.submission_id or d.job_id, "status": _state(d.status),
                     "name": (d.metadata or {}).get("name", ""), "kind": (d.metadata or {}).get("ganflow", ""),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.start_time / 1000)) if d.start_time else "",
                     "entrypoint": d.entrypoint})
    return rows


def status(job_id: str, address: Optional[str] = None) -> Dict[str, Any]:
    info = _call("jobs status", job_id, client(address).get_job_info, job_id)
    return {"id": job_id, "status": _state(info.status), "message": info.message or "", "metadata": info.metadata or {},
            "entrypoint": info.entrypoint}


def logs(job_id: str, address: Optional[str] = None) -> str:
    return _call("jobs logs", job_id, client(address).get_job_logs, job_id)


def follow(job_id: str, address: Optional[str] = None) -> Iterator[str]:
    """The job's log as it is written, until the job ends."""
    jobs = client(address)
    _call("jobs logs", job_id, jobs.get_job_status, job_id)  # unknown id: a clear error, not a hang
    stream = jobs.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def wait(job_id: str, address: Optional[str] = None, timeout_s: float = 3600, poll_s: float = 1.0) -> str:
    jobs = client(address)
    deadline = time.monotonic() + timeout_s
    while True:
        state = _state(_call("jobs status", job_id, jobs.get_job_status, job_id))
        if state in TERMINAL or time.monotonic() > deadline:
            return state
        time.sleep(poll_s)


def stop(job_id: str, address: Optional[str] = None, timeout_s: float = 60) -> str:
    """Ask Ray to stop the job (SIGTERM to `ganflow`, which marks its run stopped; SIGKILL after
    Ray's grace period) and wait until it has."""
    _call("jobs stop", job_id, client(address).stop_job, job_id)
    return wait(job_id, address, timeout_s)
