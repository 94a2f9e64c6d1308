"""Writing a prepared set (see prepared.py for the layout): a source's images listed in a fixed
order, cut into shards, each shard decoded, centre-cropped, Lanczos-resized once and written as
uint8 by whichever worker takes it, then the labels, the reference statistics and the manifest.

Sources: a local folder or an s3:// prefix of PNG/JPEG files (class subfolders become labels), or a
StyleGAN `dataset_tool` zip (PNG files and a dataset.json of labels). A file that does not decode is
reported by name and left out; the manifest lists it.

A prepare can be cut short and run again: its settings are kept in prepare.json, a shard is done
when its .json is there, and only the missing shards are written; the manifest comes last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ganflow.data.images import IMAGE_SUFFIXES, MAX_FILE_BYTES, BadImage, decode_image
from ganflow.data.prepared import FORMAT, LABELS, MANIFEST, PARAMS, VERSION, shard_done, shard_name
from ganflow.store import file_sha256
from ganflow.store.names import part


MAX_CLASSES = 1 << 16  # a dataset.json label must be below this (each label is a row of D's and G's embeddings)
ON_ERROR = ("skip", "fail")


class PrepareError(ValueError):
    """Bad prepare arguments or sources, said in one line naming the argument."""


@dataclass
class Source:
    """What a prepare reads: `names` in order (paths relative to the source, or keys), their labels."""

    uri: str
    kind: str  # folder | s3 | zip
    names: List[str]
    labels: List[int]  # -1: none
    classes: List[str]

    def describe(self) -> dict:
        return {"uri": self.uri, "kind": self.kind, "count": len(self.names),
                "names_sha256": hashlib.sha256("\n".join(self.names).encode()).hexdigest()}


def _json_labels(data: bytes, where: str) -> Dict[str, int]:
    """StyleGAN's dataset.json: {"labels": [[relative path, integer label], ...]} (or null)."""
    try:
        labels = json.loads(data).get("labels")
        mapping = {str(name): int(label) for name, label in (labels or [])}
    except (ValueError, TypeError, AttributeError) as err:
        raise PrepareError(f"--labels: {where} is not a StyleGAN dataset.json ({{\"labels\": [[file, int], ...]}}): {err}") from None
    outside = [(n, v) for n, v in mapping.items() if not 0 <= v < MAX_CLASSES]
    if outside:
        raise PrepareError(f"--labels: {where} labels {outside[0][0]} as {outside[0][1]}; labels are integers in "
                           f"[0, {MAX_CLASSES}) (each is a row of the networks' class embeddings)")
    return mapping


def _apply_labels(uri: str, kind: str, names: List[str], labels: str, mapping: Optional[Dict[str, int]]) -> Source:
    if labels == "none":
        return Source(uri, kind, names, [-1] * len(names), [])
    if mapping is not None:
        missing = [n for n in names if n not in mapping]
        if missing:
            raise PrepareError(f"--labels: {len(missing)} image(s) have no label, e.g. {missing[0]}")
        values = sorted({mapping[n] for n in names})
        if values[0] < 0:
            raise PrepareError(f"--labels: labels must be integers >= 0, got {values[0]}")
        return Source(uri, kind, names, [mapping[n] for n in names], [str(v) for v in range(values[-1] + 1)])
    # the class is the top folder under SOURCE (folders nested in it belong to it)
    classes = sorted({n.split("/", 1)[0] for n in names}) if all("/" in n for n in names) else []
    for c in classes:  # folder names from an archive or a bucket: they name folders again later (synth)
        part(c, f"{uri}: class folder")
    if labels == "folders" and not classes:
        raise PrepareError("--labels: folders needs every image in a class subfolder of SOURCE; use --labels none")
    index = {c: i for i, c in enumerate(classes)}
    return Source(uri, kind, names, [index[n.split("/", 1)[0]] if classes else -1 for n in names], classes)


def list_source(source: str, labels: str = "auto", options=None) -> Source:
    """The images of `source` in a fixed order, labelled: `labels` is auto (a zip's dataset.json, else
    class folders when every image sits in one), folders, none, or a dataset.json file."""
    from ganflow.store import S3Options, StorageError, is_s3
    from ganflow.store.s3 import S3Store

    mapping = None
    if labels not in ("auto", "folders", "none"):
        if not Path(labels).is_file():
            raise PrepareError(f"--labels: {labels!r} is not folders, none or a dataset.json file")
        mapping = _json_labels(Path(labels).read_bytes(), labels)
    if is_s3(source):
        try:
            keys = S3Store(source.rstrip("/"), options or S3Options()).list()
        except StorageError as err:
            raise PrepareError(f"SOURCE: {err}") from None
        names = sorted(k for k in keys if Path(k).suffix.lower() in IMAGE_SUFFIXES)
        kind = "s3"
    elif zipfile.is_zipfile(source) if Path(source).is_file() else False:
        with zipfile.ZipFile(source) as z:
            members = z.namelist()
            names = sorted(m for m in members if Path(m).suffix.lower() in IMAGE_SUFFIXES)
            if mapping is None and labels == "auto" and "dataset.json" in members:
                raw = read_member(z, "dataset.json", f"{source}:dataset.json")
                mapping = _json_labels(raw, f"{source}:dataset.json") or None  # null: unlabelled
        kind = "zip"
    elif Path(source).is_dir():
        root = Path(source)
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        kind = "folder"
    else:
        raise PrepareError(f"SOURCE: {source!r} is not a folder, a .zip from StyleGAN's dataset_tool or an s3:// prefix")
    if not names:
        raise PrepareError(f"SOURCE: no .png/.jpg/.jpeg files in {source}")
    return _apply_labels(source, kind, names, labels, mapping)


def read_member(z: zipfile.ZipFile, name: str, where: str) -> bytes:
    """A zip member's bytes, refused past MAX_FILE_BYTES whatever its header claims (a 400 KB zip can
    hold a member that inflates to gigabytes)."""
    if z.getinfo(name).file_size > MAX_FILE_BYTES:
        raise BadImage(f"{where}: inflates to {z.getinfo(name).file_size} bytes, over the bound of {MAX_FILE_BYTES}")
    with z.open(name) as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise BadImage(f"{where}: inflates past the bound of {MAX_FILE_BYTES} bytes")
    return data


@dataclass
class Settings:
    resolution: int
    channels: int
    shard_size: int
    source: dict = field(default_factory=dict)  # Source.describe()

    def check(self) -> None:
        r = self.resolution
        if r < 4 or r > 4096 or r & (r - 1):
            raise PrepareError(f"--resolution: must be a power of two between 4 and 4096, got {r}")
        if self.channels not in (1, 3):
            raise PrepareError(f"--channels: must be 1 or 3, got {self.channels}")
        if self.shard_size < 1:
            raise PrepareError(f"--shard-size: must be >= 1, got {self.shard_size}")


class ShardWriter:
    """Writes shards of one prepare; one per process (in-process, or a Ray actor)."""

    def __init__(self, source: Source, out: str, settings: Settings, options=None):
        from ganflow.store import S3Options, open_store

        self.source, self.settings = source, settings
        self.options = options or S3Options()
        self.out = open_store(out, self.options)
        self._zip = zipfile.ZipFile(source.uri) if source.kind == "zip" else None
        self._s3 = None
        if source.kind == "s3":
            from ganflow.store.s3 import S3Store

            self._s3 = S3Store(source.uri.rstrip("/"), self.options)

    def _read(self, name: str):
        if self._zip is not None:
            return read_member(self._zip, name, name)
        if self._s3 is not None:
            return self._s3.get_bytes(name)
        return Path(self.source.uri) / name  # decode_image bounds its size

    def write(self, index: int, first: int, stop: int) -> dict:
        """Shard `index` from the source's images [first, stop): written, then its .json (done). A
        file that does not decode (BadImage) is left out and listed with why."""
        images, kept, skipped = [], [], []
        for i in range(first, stop):
            name = self.source.names[i]
            try:
                images.append(decode_image(self._read(name), name, self.settings.resolution, self.settings.channels))
                kept.append(i)
            except BadImage as err:
                skipped.append([name, str(err)[len(name) + 2:] if str(err).startswith(f"{name}: ") else str(err)])
        s = self.settings
        array = np.stack(images) if images else np.zeros((0, s.channels, s.resolution, s.resolution), np.uint8)

        def fill(path: Path) -> tuple:
            data = np.ascontiguousarray(array)
            with open(path, "wb") as f:  # np.save's tofile reports a full disk without its errno
                np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(data))
                f.write(memoryview(data).cast("B"))
            return path.stat().st_size, file_sha256(path)

        size, digest = self.out.write_with(shard_name(index), fill)
        done = {"index": index, "count": len(kept), "bytes": size, "sha256": digest,
                "labels": [self.source.labels[i] for i in kept], "skipped": skipped, "first": first, "stop": stop}
        self.out.put_bytes(shard_done(index), json.dumps(done).encode())
        return done


def plan(count: int, shard_size: int) -> List[Tuple[int, int, int]]:
    """(shard index, first, stop) of every shard."""
    return [(k, first, min(first + shard_size, count)) for k, first in enumerate(range(0, count, shard_size))]


def begin(out_store, settings: Settings) -> Dict[int, dict]:
    """Starts or resumes a prepare at `out_store`: the shards already done (index -> their .json).
    PrepareError when the location holds a prepare of other settings or sources."""
    wanted = dataclasses.asdict(settings)
    if out_store.exists(PARAMS):
        earlier = json.loads(out_store.get_bytes(PARAMS))
        if earlier != wanted:
            changed = sorted(k for k in wanted if earlier.get(k) != wanted[k])
            raise PrepareError(f"--out: {out_store.uri()} holds a prepare with other {', '.join(changed)}; "
                               "give another --out, or delete that one")
    else:
        out_store.put_bytes(PARAMS, json.dumps(wanted, indent=1).encode())
    done = {}
    for key in out_store.list("shards"):
        if key.endswith(".json"):
            entry = json.loads(out_store.get_bytes(key))
            if out_store.exists(shard_name(entry["index"])):
                done[entry["index"]] = entry
    return done


def finish(out_store, source: Source, settings: Settings, shards: List[dict], reference: Optional[dict] = None) -> dict:
    """Labels, then the manifest (last: its presence says the set is complete)."""
    shards = sorted(shards, key=lambda e: e["index"])
    labels = np.array([label for e in shards for label in e["labels"]], dtype=np.int64)
    buf = io.BytesIO()
    np.save(buf, labels, allow_pickle=False)
    out_store.put_bytes(LABELS, buf.getvalue())
    count = int(sum(e["count"] for e in shards))
    manifest = {
        "format": FORMAT, "version": VERSION, "count": count,
        "shape": [settings.channels, settings.resolution, settings.resolution],
        "classes": source.classes, "resolution": settings.resolution, "channels": settings.channels,
        "source": source.describe(), "labels_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "shards": [{"file": shard_name(e["index"]), "count": e["count"], "bytes": e["bytes"], "sha256": e["sha256"]}
                   for e in shards],
        "skipped": [s for e in shards for s in e["skipped"]],
        "reference": reference or {},
    }
    if count == 0:
        raise PrepareError(f"SOURCE: none of the {len(source.names)} files decoded as an image")
    out_store.put_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest

