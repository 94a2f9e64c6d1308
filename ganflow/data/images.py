"""A folder of PNG/JPEG images; class subfolders, when every image sits in one, become labels.

A local folder is decoded once into memory (fast for the sizes a folder on one disk holds). An
`s3://bucket/prefix` is streamed: Ray Data reads it (`ganflow.ray.stream`), Ray Train splits the
stream so each worker reads a disjoint shard of every epoch, and no worker ever holds the whole
set; `StreamedBatches` turns a shard into batches. Both paths crop and resize the same way
(`square_resize`: centre square, Lanczos).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ganflow.config import ConfigError, DataConfig
from ganflow.core.rng import rng_seed
from ganflow.data.dataset import Dataset, register
from ganflow.store import S3Options, StorageError, is_s3
from ganflow.store.s3 import S3Store

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# Bounds on what an image file may ask of us (README "Trust"): a decompression bomb is a small file
# that decodes to gigapixels; 16-bit and float modes would be clipped to 8 bits without a word.
MAX_PIXELS = 1 << 26  # 67 MP: 8192 x 8192
MAX_FILE_BYTES = 64 << 20  # one image file, or one archive member, read into memory
MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}


class BadImage(ValueError):
    """One image that cannot be used, said in one line starting with its name."""


def open_image(data: Union[bytes, Path], name: str):
    """A PIL image whose header has been checked (decodes as PNG/JPEG, pixel count, mode); its
    pixels are not decoded yet. BadImage otherwise."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        except UnidentifiedImageError:
            raise BadImage(f"{name}: not a readable PNG/JPEG") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError, ValueError) as err:
            raise BadImage(f"{name}: {_why(err)}") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise BadImage(f"{name}: {w}x{h} pixels is over the bound of {MAX_PIXELS} (a decompression bomb, or not a training image)")
    if im.mode not in MODES:
        im.close()
        raise BadImage(f"{name}: pixel mode {im.mode} (16-bit or float) would lose its range in 8 bits; convert it to 8-bit first")
    return im


def decode_image(data: Union[bytes, Path], name: str, resolution: int, channels: int) -> np.ndarray:
    """One file's bytes (or path) -> uint8 (C, H, W) as training sees it; BadImage naming the file
    when it is not an image, is truncated, too large, or of a mode 8 bits cannot hold."""
    if isinstance(data, Path) and data.stat().st_size > MAX_FILE_BYTES:
        raise BadImage(f"{name}: {data.stat().st_size} bytes is over the bound of {MAX_FILE_BYTES} for one image file")
    with open_image(data, name) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as err:  # truncated or broken inside
            raise BadImage(f"{name}: {_why(err)}") from None
        return square_resize(im, resolution, channels)


def _why(err: BaseException) -> str:
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}"[:200]


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
    """Before Ray starts: a local folder holds images, and every file's header says it is one this
    can decode (a bucket's are listed by the driver; its files are read by Ray Data)."""
    if not is_s3(cfg.path or ""):
        for p in local_images(cfg):
            try:
                open_image(p, str(p)).close()
            except BadImage as err:
                raise ConfigError(f"data.path: {err}; remove it, or `ganflow data prepare` the folder "
                                  "(it lists and leaves out files that do not decode)") from None


@register("images", kind="images", labelled=True, needs_path=True, metrics=("fid",), known_classes=folder_classes,
          check=check_folder)
def images(cfg: DataConfig, seed: int, storage: Optional[S3Options] = None) -> Dataset:
    if is_s3(cfg.path or ""):
        return _streamed(cfg, storage or S3Options())
    root = Path(cfg.path or "")
    channels = cfg.channels or 3
    listed = local_images(cfg)
    classes = class_names([p.as_posix() for p in listed], root.as_posix())  # of every file: labels do not shift
    arrays, files = [], []
    for p in listed:
        try:
            arrays.append(decode_image(p, str(p), cfg.resolution, channels))
            files.append(p)
        except BadImage as err:  # its header passed before Ray: truncated inside
            warnings.warn(f"data.path: left out {err}")
    if not files:
        raise ConfigError(f"data.path: none of the images under {str(root)!r} decode")
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
