"""From a W&B artifact ganflow logged back to the checkpoint it references:
`wandb:[entity/][project/]name[:alias]`, online through the W&B API, offline from the run files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from ganflow.config import WandbConfig
from ganflow.run.layout import RunLayout
from ganflow.tracking.settings import ONLINE_CHECK_TIMEOUT_S, TrackingError, resolve

WANDB_SCHEME = "wandb:"


def _checkpoint_location(metadata: Dict[str, Any], references: Dict[str, str]) -> Optional[str]:
    """The storage location an artifact logged by ganflow stands for."""
    if metadata.get("uri"):
        return metadata["uri"]
    ref = references.get(RunLayout.MANIFEST)
    if ref:
        parent = ref.rsplit("/", 1)[0]
        return urlsplit(parent).path if parent.startswith("file://") else parent
    return None


def _cache(name: str) -> Path:
    from ganflow.store import cache_home
    from ganflow.store.names import part

    return cache_home() / "wandb" / part(name, "artifact name")


def _staged_copy(spec: str, art) -> str:
    """An offline artifact's own files (W&B keeps them in its staging area until `wandb sync`
    uploads them) copied into a folder of ours: the checkpoint they make up."""
    import shutil

    from ganflow.store.atomic import copy_atomic
    from ganflow.store.names import contained

    missing = [p for p, local in art.local.items() if not Path(local).is_file()]
    if missing or not art.local:
        raise TrackingError(f"{spec}: W&B no longer keeps this offline artifact's files here (`wandb sync` uploads and "
                            "then removes them); set WANDB_API_KEY to fetch it from W&B")
    target = _cache(f"{art.name}-offline-{art.metadata.get('step', 0)}")
    shutil.rmtree(target, ignore_errors=True)
    for path, local in art.local.items():
        copy_atomic(Path(local), target / contained(path, f"{spec}: file name"))
    return str(target)


def resolve_artifact(spec: str, wandb_dir: Optional[str] = None) -> str:
    """The checkpoint location behind `wandb:[entity/][project/]name[:alias]` (alias default
    `latest`): where it references, or a local copy of the files it holds (the generator of a run
    stored in a local directory). Online (WANDB_API_KEY, not WANDB_MODE=offline) through the W&B API; offline from
    the offline runs under `wandb_dir` (default WANDB_DIR, else the working directory)."""
    body = spec[len(WANDB_SCHEME):] if spec.startswith(WANDB_SCHEME) else spec
    path, _, alias = body.rpartition(":") if ":" in body else (body, "", "latest")
    parts = path.split("/")
    if not path or len(parts) > 3 or not all(parts):
        raise TrackingError(f"{spec}: expected wandb:[entity/][project/]name[:alias], e.g. wandb:team/ganflow/generator-<run_id>:latest")
    name, project, entity = parts[-1], (parts[-2] if len(parts) > 1 else None), (parts[-3] if len(parts) > 2 else None)
    settings = resolve(WandbConfig(project=project, entity=entity))  # else WANDB_PROJECT, WANDB_ENTITY
    if settings.mode == "online":
        import wandb

        try:
            art = wandb.Api(timeout=ONLINE_CHECK_TIMEOUT_S).artifact(f"{'/'.join(p for p in (entity, settings.project) if p)}/{name}:{alias}")
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TrackingError(f"{spec}: W&B could not resolve it ({first})") from None
        if art.metadata.get("holds_files"):  # the generator's own copy: the run folder may be long gone
            return str(Path(art.download(root=str(_cache(f"{name}-{art.version}")))))
        found = _checkpoint_location(art.metadata, {e.path: e.ref for e in art.manifest.entries.values() if e.ref})
    else:
        from ganflow.tracking.runfiles import RunFileFormatError, offline_runs

        root = wandb_dir or os.environ.get("WANDB_DIR") or os.getcwd()
        found = None
        try:
            runs = offline_runs(Path(root))
        except RunFileFormatError as err:
            raise TrackingError(f"{spec}: cannot read this wandb's offline run files ({err}); set WANDB_API_KEY to "
                                "ask W&B, or name the checkpoint's location") from None
        for run in runs:
            if project is not None and run.project != project:
                continue
            for art in run.artifacts:  # in logging order: the last holder of an alias has it now
                if art.name == name and alias in art.aliases:
                    found = _staged_copy(spec, art) if art.metadata.get("holds_files") else \
                        _checkpoint_location(art.metadata, art.references)
        if found is None:
            raise TrackingError(f"{spec}: no offline W&B run under {root} logged artifact {name!r} with alias {alias!r} "
                                "(set WANDB_DIR to where the run's wandb/ folder is, or WANDB_API_KEY to ask W&B)")
    if found is None:
        raise TrackingError(f"{spec}: this artifact does not point at a ganflow checkpoint")
    return found
