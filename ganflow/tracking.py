"""Weights & Biases tracking: one W&B run per ganflow run, with the ganflow run id as its id.

The driver resolves the settings and checks them before Ray starts (`prepare`); rank 0 of the
workers opens the W&B run (`open_tracker`) and logs scalars, sample grids, evaluation values,
and checkpoints as artifacts that reference their storage URI; every other rank gets the no-op
`Tracker`. Once training runs, a failing W&B never stops it: the tracker warns once and goes
quiet. `wandb` is imported only when a run is tracked.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

from ganflow.config import SECRET_KEY, JobConfig, WandbConfig
from ganflow.objectstore import is_s3

log = logging.getLogger("ganflow.tracking")

REDACTED = "<redacted>"
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

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def resolve(w: WandbConfig, env: Optional[Dict[str, str]] = None) -> WandbSettings:
    """Mode: the config's, else WANDB_MODE, else online with WANDB_API_KEY and offline without
    (never a login prompt). Dir: the config's, else WANDB_DIR, else the working directory."""
    env = os.environ if env is None else env
    mode = w.mode
    if mode is None and env.get("WANDB_MODE"):
        mode = WANDB_MODE_ALIASES.get(env["WANDB_MODE"].strip().lower())
        if mode is None:
            raise TrackingError(f"WANDB_MODE: unknown value {env['WANDB_MODE']!r}; use online, offline or disabled")
    if mode is None:
        mode = "online" if env.get("WANDB_API_KEY") else "offline"
    directory = os.path.abspath(os.path.expanduser(w.dir or env.get("WANDB_DIR") or os.getcwd()))
    return WandbSettings(mode=mode, dir=directory, project=w.project, entity=w.entity, group=w.group,
                         job_type=w.job_type, tags=list(w.tags), notes=w.notes, on_error=w.on_error,
                         log_checkpoints=w.log_checkpoints)


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


# --- redaction ---

def _secret_values(env: Dict[str, str]) -> List[str]:
    """Values of secret-looking environment variables (AWS_SECRET_ACCESS_KEY, WANDB_API_KEY, ...)."""
    return sorted({v for k, v in env.items() if SECRET_KEY.search(k) and len(v) >= 8}, key=len, reverse=True)


def _strip_userinfo(text: str) -> str:
    def clean(m: re.Match) -> str:
        parts = urlsplit(m.group(0))
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=host))

    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@]+@[^\s]+", clean, text)


def redact(value: Any, env: Optional[Dict[str, str]] = None, _secrets: Optional[List[str]] = None) -> Any:
    """`value` with secret-named keys, credentials in URLs and the values of secret environment
    variables replaced by REDACTED. Everything sent to W&B goes through this."""
    secrets = _secret_values(os.environ if env is None else env) if _secrets is None else _secrets
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) else redact(v, _secrets=secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, _secrets=secrets) for v in value]
    if isinstance(value, str):
        value = _strip_userinfo(value)
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


# --- the trackers ---

class Tracker:
    """Tracks nothing: every rank but 0, and runs with tracking disabled."""

    def log(self, metrics: Dict[str, Any], step: int) -> None: ...
    def log_samples(self, png: bytes, step: int) -> None: ...
    def log_checkpoint(self, uri: str, local_dir: Path, step: int, best: bool) -> None: ...
    def log_generator(self, uri: str, local_dir: Path, step: int) -> None: ...
    def set_summary(self, values: Dict[str, Any]) -> None: ...
    def finish(self, failed: bool = False) -> None: ...


def _guarded(method):
    """Run a W&B call; if it fails, warn once and stop tracking, never the training."""

    @functools.wraps(method)
    def call(self: "WandbTracker", *args, **kwargs):
        if self.run is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:
            log.warning("W&B tracking stopped, training goes on untracked: %s: %s", type(err).__name__, err)
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1)
            except Exception:  # already broken; nothing more to say
                pass
            return None

    return call


def reference_uri(location: str) -> str:
    """An artifact reference for a storage location: s3:// as is, local paths as file:// URIs."""
    return location.rstrip("/") if is_s3(location) else Path(location).resolve().as_uri()


class WandbTracker(Tracker):
    def __init__(self, run, run_id: str, settings: WandbSettings, skip_through: int):
        self.run, self.run_id, self.settings = run, run_id, settings
        self.skip_through = skip_through  # steps already in W&B from an attempt that was cut short

    @_guarded
    def log(self, metrics: Dict[str, Any], step: int) -> None:
        if step > self.skip_through:
            self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=step)

    @_guarded
    def log_samples(self, png: bytes, step: int) -> None:
        if step > self.skip_through:
            import wandb
            from PIL import Image

            self.run.log({"samples": wandb.Image(Image.open(io.BytesIO(png)), caption=f"step {step}")}, step=step)

    def _artifact(self, name: str, kind: str, uri: str, local_dir: Path, step: int, only: Optional[List[str]] = None):
        """An artifact whose files reference the checkpoint in storage; our manifest's sha256 of
        each file rides along as metadata (W&B does not re-read the bytes)."""
        import json

        import wandb

        manifest = json.loads((local_dir / "manifest.json").read_text())
        files = {f: h for f, h in manifest["files"].items() if only is None or f in only}
        base = reference_uri(uri)
        art = wandb.Artifact(name, type=kind, metadata={"uri": uri, "step": step, "sha256": files, "config_hash": manifest.get("config_hash")})
        for f in ["manifest.json", *files]:
            art.add_reference(f"{base}/{f}", name=f, checksum=False)
        return art

    @_guarded
    def log_checkpoint(self, uri: str, local_dir: Path, step: int, best: bool) -> None:
        if self.settings.log_checkpoints:
            art = self._artifact(f"checkpoints-{self.run_id}", "checkpoint", uri, local_dir, step)
            self.run.log_artifact(art, aliases=["latest", f"step_{step}"] + (["best"] if best else []))

    @_guarded
    def log_generator(self, uri: str, local_dir: Path, step: int) -> None:
        import json

        state = json.loads((local_dir / "manifest.json").read_text())["state"]
        part = "G_ema" if "G_ema" in state else "G"
        art = self._artifact(f"generator-{self.run_id}", "model", uri, local_dir, step, only=[f"{part}.safetensors"])
        self.run.log_artifact(art, aliases=["latest"])

    @_guarded
    def set_summary(self, values: Dict[str, Any]) -> None:
        for k, v in values.items():
            self.run.summary[k] = v

    def finish(self, failed: bool = False) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run_dir = Path(run.dir).parent
                run.finish(exit_code=1 if failed else 0)
                _wait_for_run_file(run_dir)
            except Exception as err:
                log.warning("W&B run did not finish cleanly: %s", err)


RUN_FILE_WAIT_S = 10.0


def _wait_for_run_file(run_dir: Path) -> None:
    """W&B's finish() can return before its service has written the run file (seen under load:
    the file read back right after had not even the run record). Whoever reads it next (`wandb
    sync` after `ganflow train`, a resumed attempt, `wandb:` artifact names) needs it whole, so
    wait for its exit record (bounded: a lost file is W&B's to report)."""
    from ganflow.wandb_files import WandbFileError, read_run

    deadline = time.monotonic() + RUN_FILE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if read_run(run_dir).exit_code is not None:
                return
        except (OSError, WandbFileError):
            pass
        time.sleep(0.05)
    log.warning("W&B run file in %s has no exit record %.0f s after finish", run_dir, RUN_FILE_WAIT_S)


# W&B writes a run's .wandb file when a 32 KiB block fills, at the end, and every 15 s. Ray kills
# the workers of a trial ASHA or PBT stops (and a preempted node's) without a finish: a trial cut
# short after a few seconds left an empty file, no group, no history. One write per second, no
# fsync, keeps all but the last second of it.
RUN_FILE_FLUSH_S = 1.0


def _flush_setting(wandb) -> Dict[str, float]:
    """The periodic flush is new in wandb 0.31; older versions refuse unknown settings."""
    known = getattr(wandb.Settings, "model_fields", {})
    return {"x_transaction_log_flush_interval": RUN_FILE_FLUSH_S} if "x_transaction_log_flush_interval" in known else {}


def open_tracker(settings: Dict[str, Any], run_id: str, config: Dict[str, Any], rank: int, skip_through: int = 0) -> Tracker:
    """Rank 0's W&B run (same id on resume, `resume="allow"`); a no-op tracker elsewhere.
    Failing to start raises TrackingError (on_error=fail) or warns and tracks nothing."""
    s = WandbSettings(**settings)
    if rank != 0 or s.mode == "disabled":
        return Tracker()
    try:
        import wandb

        run = wandb.init(
            project=s.project, entity=s.entity, group=s.group, job_type=s.job_type,
            tags=redact(s.tags), notes=redact(s.notes), name=f"{config.get('name', 'run')}-{run_id}", id=run_id, resume="allow",
            config=redact(config), dir=s.dir, mode=s.mode, reinit="create_new",
            settings=wandb.Settings(init_timeout=ONLINE_CHECK_TIMEOUT_S * 3, silent=True, save_code=False, **_flush_setting(wandb)),
        )
    except Exception as err:
        msg = f"W&B could not start ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        if s.on_error == "fail":
            raise TrackingError(f"{msg}; set tracking.wandb.on_error=disable to train untracked") from None
        log.warning("%s; training untracked", msg)
        return Tracker()
    if s.mode == "online":  # W&B knows how far the run got
        skip_through = max(skip_through, getattr(run, "step", 0) - 1)
    else:
        skip_through = _offline_logged_through(run, run_id, skip_through)
    return WandbTracker(run, run_id, s, skip_through)


def _offline_logged_through(run, run_id: str, fallback: int) -> int:
    """The last step earlier offline attempts of this run wrote to their W&B files on this node.
    Better than metrics.jsonl's last step (`fallback`): a killed worker's W&B may not have
    written its last rows (they are logged again, not lost), and on S3 metrics.jsonl may lag
    behind W&B (those rows are not logged twice). No earlier file here (a restart on another
    node): the fallback."""
    from ganflow.wandb_files import WandbFileError, read_run

    current = Path(run.dir).parent.resolve()
    steps, earlier = [], 0
    for attempt in sorted(current.parent.glob(f"offline-run-*-{run_id}")):
        if attempt.resolve() == current:
            continue
        earlier += 1
        try:
            steps += read_run(attempt).steps
        except (OSError, WandbFileError):  # killed before W&B wrote anything
            continue
    if not earlier:
        return fallback
    return max(steps, default=0)


# --- from an artifact back to the checkpoint ---

WANDB_SCHEME = "wandb:"


def _checkpoint_location(metadata: Dict[str, Any], references: Dict[str, str]) -> Optional[str]:
    """The storage location an artifact logged by ganflow stands for."""
    if metadata.get("uri"):
        return metadata["uri"]
    ref = references.get("manifest.json")
    if ref:
        parent = ref.rsplit("/", 1)[0]
        return urlsplit(parent).path if parent.startswith("file://") else parent
    return None


def resolve_artifact(spec: str, wandb_dir: Optional[str] = None) -> str:
    """The checkpoint location behind `wandb:[entity/][project/]name[:alias]` (alias default
    `latest`). Online (WANDB_API_KEY, not WANDB_MODE=offline) through the W&B API; offline from
    the offline runs under `wandb_dir` (default WANDB_DIR, else the working directory)."""
    body = spec[len(WANDB_SCHEME):] if spec.startswith(WANDB_SCHEME) else spec
    path, _, alias = body.rpartition(":") if ":" in body else (body, "", "latest")
    parts = path.split("/")
    if not path or len(parts) > 3 or not all(parts):
        raise TrackingError(f"{spec}: expected wandb:[entity/][project/]name[:alias], e.g. wandb:team/ganflow/generator-<run_id>:latest")
    name, project, entity = parts[-1], (parts[-2] if len(parts) > 1 else None), (parts[-3] if len(parts) > 2 else None)
    settings = resolve(WandbConfig(project=project or "ganflow", entity=entity))
    if settings.mode == "online":
        import wandb

        try:
            art = wandb.Api(timeout=ONLINE_CHECK_TIMEOUT_S).artifact(f"{'/'.join(p for p in (entity, settings.project) if p)}/{name}:{alias}")
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TrackingError(f"{spec}: W&B could not resolve it ({first})") from None
        found = _checkpoint_location(art.metadata, {e.path: e.ref for e in art.manifest.entries.values() if e.ref})
    else:
        from ganflow.wandb_files import offline_runs

        root = wandb_dir or os.environ.get("WANDB_DIR") or os.getcwd()
        found = None
        for run in offline_runs(Path(root)):
            if project is not None and run.project != project:
                continue
            for art in run.artifacts:  # in logging order: the last holder of an alias has it now
                if art.name == name and alias in art.aliases:
                    found = _checkpoint_location(art.metadata, art.references)
        if found is None:
            raise TrackingError(f"{spec}: no offline W&B run under {root} logged artifact {name!r} with alias {alias!r} "
                                "(set WANDB_DIR to where the run's wandb/ folder is, or WANDB_API_KEY to ask W&B)")
    if found is None:
        raise TrackingError(f"{spec}: this artifact does not point at a ganflow checkpoint")
    return found
