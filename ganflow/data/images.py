"""A folder of PNG/JPEG images; class subfolders, when every image sits in one, become labels.

A local folder is decoded once into memory (fast for the sizes a folder on one disk holds). An
`s3://bucket/prefix` is streamed: Ray Data reads it (`ganflow.ray.stream`), Ray Train splits the
stream so each worker reads a disjoint shard of every epoch, and no worker ever holds the whole
set; `StreamedBatches` turns a shard into batches. Both paths crop and resize the same way
(`square_resize`: centre square, Lanczos).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ganflow.config import ConfigError, DataConfig
from ganflow.core.rng import rng_seed
from ganflow.data.dataset import Dataset, register
from ganflow.store import S3Options, StorageError, is_s3
from ganflow.store.s3 import S3Store

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def square_resize(im, resolution: int, channels: int) -> np.ndarray:
    """A PIL image -> uint8 (C, H, W): centre crop to a square, then Lanczos resize."""
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    side = min(w, h)
    im = im.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def class_names(files: List[str], root: str) -> List[str]:
    """Sorted names of the files' parent folders when every file sits in a folder below `root`
    ('/'-separated paths; root "" for keys relative to it), else []."""
    rel = [f[len(root):].lstrip("/") for f in files]
    if not rel or any("/" not in r for r in rel):
        return []
    return sorted({r.rsplit("/", 2)[-2] for r in rel})


def folder_classes(cfg: DataConfig) -> Optional[List[str]]:
    """The class folders of a local data.path (data.classes is checked against them)."""
    if is_s3(cfg.path or ""):
        raise ConfigError("data.classes: is not supported for s3:// images yet; give the classes their own prefix")
    root = Path(cfg.path or "")
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else None


def local_images(cfg: DataConfig) -> List[Path]:
    """The image files of a local data.path, sorted; ConfigError when there are none."""
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise ConfigError(f"data.path: {str(root)!r} is not a directory of images; give a folder of PNG/JPEG files "
                          "(class subfolders become labels) or an s3:// prefix")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"data.path: no .png/.jpg/.jpeg files under {str(root)!r}")
    return files


def check_folder(cfg: DataConfig, options=None) -> None:
    """Before Ray starts: a local folder holds images (a bucket's are listed by the driver)."""
    if not is_s3(cfg.path or ""):
        local_images(cfg)


@register("images", kind="images", labelled=True, needs_path=True, metrics=("fid",), known_classes=folder_classes,
          check=check_folder)
def images(cfg: DataConfig, seed: int, storage: Optional[S3Options] = None) -> Dataset:
    if is_s3(cfg.path or ""):
        return _streamed(cfg, storage or S3Options())
    from PIL import Image

    root = Path(cfg.path or "")
    files = local_images(cfg)
    channels = cfg.channels or 3
    classes = class_names([p.as_posix() for p in files], root.as_posix())
    arrays = []
    for p in files:
        with Image.open(p) as im:
            arrays.append(square_resize(im, cfg.resolution, channels))
    x = torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1
    if not classes:
        return Dataset(x=x)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[p.parent.name] for p in files], dtype=torch.long)
    return Dataset(x=x, y=y, num_classes=len(classes), classes=classes)


def _list_images(path: str, options: S3Options) -> List[str]:
    store = S3Store(path.rstrip("/"), options)
    try:
        keys = [k for k in store.list() if Path(k).suffix.lower() in IMAGE_SUFFIXES]
    except StorageError as err:
        raise ConfigError(f"data.path: {err}") from None
    if not keys:
        raise ConfigError(f"data.path: no .png/.jpg/.jpeg objects under {path}")
    return keys


def _streamed(cfg: DataConfig, options: S3Options) -> Dataset:
    """The data set's description only (shape, classes, size), from one listing: its images are streamed."""
    keys = _list_images(cfg.path, options)
    return streamed_dataset(cfg, len(keys), class_names(keys, ""))


def streamed_dataset(cfg: DataConfig, size: int, classes: List[str]) -> Dataset:
    """A streamed data set's description, as the driver listed it (workers do not list again)."""
    channels = cfg.channels or 3
    return Dataset(x=None, num_classes=len(classes), sample_shape=(channels, cfg.resolution, cfg.resolution),
                   size=size, classes=classes)


class StreamedBatches:
    """This worker's batches from its shard of the stream, epoch after epoch (`batches(index)` in
    the training loop; batches come in stream order, the index only counts them)."""

    def __init__(self, shard, local_batch: int, seed: int, device: torch.device, labels: bool):
        self.shard, self.local_batch, self.seed, self.device, self.labels = shard, local_batch, seed, device, labels
        self.epoch, self.paths = 0, []
        self._it = self._batches()

    def _batches(self):
        while True:
            got = False
            for batch in self.shard.iter_batches(batch_size=self.local_batch, batch_format="numpy", drop_last=True,
                                                 local_shuffle_buffer_size=4 * self.local_batch,
                                                 local_shuffle_seed=rng_seed(self.seed, 0x1A6E, self.epoch)):
                got = True
                yield batch
            if not got:
                raise RuntimeError("data.path: this worker's shard holds less than one batch; use fewer workers or a smaller train.batch_size")
            self.epoch += 1

    def __call__(self, index: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        batch = next(self._it)
        self.paths = [str(p) for p in batch["path"]]
        x = torch.from_numpy(np.ascontiguousarray(batch["image"])).to(self.device, non_blocking=True)
        x = x.float() / 127.5 - 1
        y = torch.from_numpy(batch["label"].astype(np.int64)).to(self.device) if self.labels else None
        return x, y
