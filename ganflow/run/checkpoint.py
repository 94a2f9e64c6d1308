"""Checkpoints: one safetensors file per state component + `manifest.json` written last.

The manifest holds the step, the resolved config (so `ganflow sample` rebuilds the model from the
checkpoint alone), the non-tensor state as JSON (with tensor placeholders) and the sha256 of every
file. A directory without a manifest, or whose files do not match it, is not a checkpoint.
Nothing is unpickled on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ganflow.core.state import DataMeta
from ganflow.run.layout import RunLayout
from ganflow.store import NotFound, Store, join, open_store
from ganflow.store.names import contained, join_under

FORMAT_VERSION = 1
MANIFEST = RunLayout.MANIFEST
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or fails its checksum."""


def _split(obj: Any, key: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of `obj` with tensors moved to `tensors` (dict keys keep their int/str type)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _split(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):  # e.g. Adam's betas: restored as the same type
        return {"__tuple__": [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(skel: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(skel, dict) and "__tensor__" in skel:
        return tensors[skel["__tensor__"]]
    if isinstance(skel, dict) and "__dict__" in skel:
        return {k: _join(v, tensors) for k, v in skel["__dict__"]}
    if isinstance(skel, dict) and "__tuple__" in skel:
        return tuple(_join(v, tensors) for v in skel["__tuple__"])
    if isinstance(skel, list):
        return [_join(v, tensors) for v in skel]
    return skel


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checkpoint(
    state: Dict[str, Any], config: Dict[str, Any], config_hash: str, directory: Path, meta: Optional[DataMeta] = None
) -> Path:
    """Write `state` (TrainingState.state_dict()) into `directory`; the manifest goes last.
    `meta` carries what rebuilding the generator needs beyond the config (sample shape, classes)."""
    directory.mkdir(parents=True, exist_ok=True)
    files, skeleton = {}, {}
    for name, component in state.items():
        tensors: Dict[str, torch.Tensor] = {}
        skeleton[name] = _split(component, name, tensors)
        if tensors:
            blob = save_safetensors(tensors)
            (directory / f"{name}.safetensors").write_bytes(blob)
            files[f"{name}.safetensors"] = sha256(blob)
    manifest = {
        "format_version": FORMAT_VERSION,
        "step": int(state["step"]),
        "config_hash": config_hash,
        "config": config,
        "meta": meta.to_dict() if meta is not None else {},
        "state": skeleton,
        "files": files,
    }
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, directory / MANIFEST)
    return directory


def read_manifest(directory: Path) -> Dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; not a complete checkpoint")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: unreadable manifest ({err})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {manifest.get('format_version')} is not {FORMAT_VERSION}")
    return manifest


def load_checkpoint(directory: Path, components: Optional[List[str]] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(state, manifest). Every file is checked against its sha256, even when `components` limits
    what is deserialised: a checkpoint with any damaged file is refused whole."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    tensors: Dict[str, torch.Tensor] = {}
    for fname, digest in manifest["files"].items():
        path = join_under(directory, fname, f"{directory}/{MANIFEST}: file name")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing file listed in the manifest")
        blob = path.read_bytes()
        if sha256(blob) != digest:
            raise CheckpointError(f"{path}: sha256 mismatch (file corrupted or changed after it was written); refusing to load it")
        if components is None or fname.removesuffix(".safetensors") in components:
            try:
                tensors.update(load_safetensors(blob))
            except Exception as err:  # safetensors' own error type: a file its checksum matches but that does not parse
                raise CheckpointError(f"{path}: not a readable safetensors file ({err}); refusing to load it") from None
    state = {k: _join(v, tensors) for k, v in manifest["state"].items() if components is None or k in components or k == "step"}
    return state, manifest


def latest_valid_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest intact checkpoint of a local run directory (refusals logged), or None."""
    found = load_latest_from(open_store(run_dir), "", Path(run_dir))  # a local store fetches nothing
    return Path(found[0]) if found else None


def resolve_checkpoint(run_or_checkpoint: Path) -> Path:
    """A checkpoint directory as given, or the latest valid checkpoint of a run directory."""
    p = Path(run_or_checkpoint)
    if (p / MANIFEST).is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"{p}: no such run or checkpoint")
    latest = latest_valid_checkpoint(p)
    if latest is None:
        raise CheckpointError(f"{p}: no complete checkpoint under {p / RunLayout.CHECKPOINTS}")
    return latest


# --- checkpoints in a Store (a local directory or an S3 bucket) ---


def publish_to(store: Store, local_dir: Path, key: str) -> str:
    """Publish a finished checkpoint under `key`; returns its URI. Never visible half-written: a
    directory rename locally, the manifest after every other file in a bucket (readers treat a
    prefix without a manifest as absent)."""
    return store.publish_dir(Path(local_dir), key, last=MANIFEST)


def fetch(store: Store, key: str, cache_dir: Path) -> Path:
    """Checkpoint `key` as a local directory (in place for a local store, else downloaded into
    `cache_dir`, manifest last); the sha256 of every file is compared when it is loaded."""
    try:
        manifest = store.get_bytes(join(key, MANIFEST))
    except NotFound:
        raise CheckpointError(f"{store.uri(key)}: no {MANIFEST}; not a complete checkpoint") from None
    try:
        files = [contained(n, f"{store.uri(key)}/{MANIFEST}: file name") for n in json.loads(manifest).get("files", {})]
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{store.uri(key)}/{MANIFEST}: unreadable manifest ({err})") from None
    try:
        return store.fetch_dir(key, files + [MANIFEST], cache_dir)
    except NotFound as err:
        raise CheckpointError(f"{err}: missing file listed in the manifest") from None


def _step_folders(store: Store, run_key: str) -> Dict[str, bool]:
    """Each checkpoint folder of a run -> whether its manifest is there (one listing)."""
    prefix = join(run_key, RunLayout.CHECKPOINTS)
    found: Dict[str, bool] = {}
    for key in store.list(prefix):
        name, _, rest = key[len(prefix):].lstrip("/").partition("/")
        if RunLayout.is_checkpoint_name(name):
            found[name] = found.get(name, False) or rest == MANIFEST
    return found


def list_checkpoints_in(store: Store, run_key: str) -> List[str]:
    """Checkpoint keys of a run in `store`, newest step first: complete ones only (a folder without
    its manifest is an upload that was cut short: not a checkpoint, and not worth a warning)."""
    names = [n for n, complete in _step_folders(store, run_key).items() if complete]
    return [join(run_key, RunLayout.CHECKPOINTS, n) for n in sorted(names, reverse=True)]


def incomplete_checkpoints_in(store: Store, run_key: str) -> List[str]:
    """Checkpoint folders without a manifest (a writer stopped inside the upload), for the run's
    next writer to remove."""
    return [join(run_key, RunLayout.CHECKPOINTS, n) for n, complete in sorted(_step_folders(store, run_key).items())
            if not complete]


def load_latest_from(store: Store, run_key: str, cache_dir: Path, prefer: Optional[str] = None):
    """(uri, state, manifest) of checkpoint `prefer` if intact, else of the newest intact one in
    the store, or None; each refusal is logged with its reason (the resume falls back)."""
    candidates = ([prefer] if prefer else []) + list_checkpoints_in(store, run_key)
    for key in candidates:
        try:
            state, manifest = load_checkpoint(fetch(store, key, cache_dir))
            return store.uri(key), state, manifest
        except CheckpointError as err:
            log.warning("refusing checkpoint %s: %s; falling back to the previous one", store.uri(key), err)
    return None

