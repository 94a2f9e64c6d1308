"""Weights & Biases tracking: one W&B run per ganflow run, with the ganflow run id as its id.

Rank 0 of the workers opens the W&B run (`open_tracker`) and logs scalars, sample grids,
evaluation values, and checkpoints as artifacts that reference their storage URI; every other
rank gets the no-op `Tracker`. Once training runs, a failing W&B never stops it: the tracker
warns once and goes quiet. `wandb` is imported only when a run is tracked.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ganflow.config import redact
from ganflow.store import is_s3
from ganflow.run.layout import RunLayout
from ganflow.tracking.settings import ONLINE_CHECK_TIMEOUT_S, TrackingError, WandbSettings

log = logging.getLogger("ganflow.tracking")


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
            self.run.log({k: v for k, v in metrics.items() if k not in ("step", "time")}, step=step)  # time: the heartbeat

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

        manifest = json.loads((local_dir / RunLayout.MANIFEST).read_text())
        files = {f: h for f, h in manifest["files"].items() if only is None or f in only}
        base = reference_uri(uri)
        art = wandb.Artifact(name, type=kind, metadata={"uri": uri, "step": step, "sha256": files, "config_hash": manifest.get("config_hash")})
        for f in [RunLayout.MANIFEST, *files]:
            art.add_reference(f"{base}/{f}", name=f, checksum=False)
        return art

    @_guarded
    def log_checkpoint(self, uri: str, local_dir: Path, step: int, best: bool) -> None:
        if self.settings.log_checkpoints:
            art = self._artifact(f"checkpoints-{self.run_id}", "checkpoint", uri, local_dir, step)
            self.run.log_artifact(art, aliases=["latest", f"step_{step}"] + (["best"] if best else []))

    @_guarded
    def log_generator(self, uri: str, local_dir: Path, step: int) -> None:
        """The final generator. Its files go into the artifact when the run's storage is a local
        directory (a teammate could not reach a file:// reference) or tracking.wandb.upload_generator
        says so: the EMA weights and a manifest of them alone (the checkpoint's, cut to G: a checkpoint
        ganflow loads as it is). Else it references the checkpoint in the bucket."""
        import json
        import tempfile

        import wandb

        manifest = json.loads((local_dir / RunLayout.MANIFEST).read_text())
        part = "G_ema" if "G_ema" in manifest["state"] else "G"
        weights = f"{part}.safetensors"
        if is_s3(uri) and not self.settings.upload_generator:
            self.run.log_artifact(self._artifact(f"generator-{self.run_id}", "model", uri, local_dir, step, only=[weights]),
                                  aliases=["latest"])
            return
        alone = {**manifest, "files": {weights: manifest["files"][weights]},
                 "state": {k: v for k, v in manifest["state"].items() if k in (part, "step")}}
        art = wandb.Artifact(f"generator-{self.run_id}", type="model", metadata={
            "uri": uri, "step": step, "sha256": alone["files"], "config_hash": manifest.get("config_hash"), "holds_files": True})
        with tempfile.TemporaryDirectory(prefix="ganflow-generator-") as tmp:
            (Path(tmp) / RunLayout.MANIFEST).write_text(json.dumps(alone))
            art.add_file(str(local_dir / weights), name=weights)  # copied into W&B's staging area now
            art.add_file(str(Path(tmp) / RunLayout.MANIFEST), name=RunLayout.MANIFEST)
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
    """finish() can return before W&B's service has written the run file; wait for its exit record."""
    from ganflow.tracking.runfiles import RunFileFormatError, WandbFileError, read_run

    deadline = time.monotonic() + RUN_FILE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if read_run(run_dir).exit_code is not None:
                return
        except RunFileFormatError as err:
            log.warning("not waiting for W&B's run file: %s", err)
            return
        except (OSError, WandbFileError):
            pass
        time.sleep(0.05)
    log.warning("W&B run file in %s has no exit record %.0f s after finish", run_dir, RUN_FILE_WAIT_S)


def open_tracker(settings: Dict[str, Any], run_id: str, config: Dict[str, Any], rank: int, skip_through: int = 0) -> Tracker:
    """Rank 0's W&B run (same id on resume, `resume="allow"`); a no-op tracker elsewhere.
    Failing to start raises TrackingError (on_error=fail) or warns and tracks nothing."""
    from ganflow.tracking.runfiles import flush_setting

    s = WandbSettings(**settings)
    if rank != 0 or s.mode == "disabled":
        return Tracker()
    try:
        import wandb

        run = wandb.init(
            project=s.project, entity=s.entity, group=s.group, job_type=s.job_type,
            tags=redact(s.tags), notes=redact(s.notes), name=f"{config.get('name', 'run')}-{run_id}", id=run_id, resume="allow",
            config=redact(config), dir=s.dir, mode=s.mode, reinit="create_new",
            settings=wandb.Settings(init_timeout=ONLINE_CHECK_TIMEOUT_S * 3, silent=True, save_code=False, **flush_setting(wandb)),
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
    from ganflow.tracking.runfiles import RunFileFormatError, WandbFileError, read_run

    current = Path(run.dir).parent.resolve()
    steps, earlier = [], 0
    for attempt in sorted(current.parent.glob(f"offline-run-*-{run_id}")):
        if attempt.resolve() == current:
            continue
        earlier += 1
        try:
            steps += read_run(attempt).steps
        except RunFileFormatError as err:
            log.warning("W&B's earlier run files unreadable (%s); resume goes by metrics.jsonl", err)
            return fallback
        except (OSError, WandbFileError):  # killed before W&B wrote anything
            continue
    if not earlier:
        return fallback
    return max(steps, default=0)


# --- from an artifact back to the checkpoint ---
