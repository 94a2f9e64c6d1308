"""Images to score or compare, from wherever a user keeps them: a folder or s3:// prefix of
PNG/JPEG (class folders give labels) or of npz files, one .npz (`ganflow sample`/`synth` format),
or a built-in data set by name. Decoded as the training data is (square resize, channels)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ganflow.data.images import IMAGE_SUFFIXES
from ganflow.store import NotFound, open_store


class ImagesError(ValueError):
    pass


@dataclass
class Images:
    x: torch.Tensor  # (N, C, H, W) in [-1, 1]
    labels: List[Optional[str]]  # class names (folder, npz label, digit), or None
    sources: List[str]  # where each image came from


def read_images(location: str, sample_shape: tuple) -> Images:
    """A folder or s3:// prefix of PNG/JPEG (class folders give labels) or of npz files, one .npz
    (`ganflow sample`/`synth` format: `images`, optional `labels`), or a built-in data set by
    name (`digits`), shaped like the run's samples."""
    from ganflow.data import DATASETS

    if location in DATASETS and not DATASETS[location].needs_path and not Path(location).exists():
        return _builtin(location, sample_shape)
    if location.endswith(".npz"):
        parent, _, name = location.rstrip("/").rpartition("/")
        store = open_store(parent or ".")
        keys = [name]
    else:
        store = open_store(location.rstrip("/"))
        keys = store.list("")
    images = [k for k in keys if Path(k).suffix.lower() in IMAGE_SUFFIXES]
    arrays = sorted(k for k in keys if k.endswith(".npz"))
    try:
        if images:
            return _decode(store, images, sample_shape)
        if arrays:
            return _npz(store, arrays, sample_shape)
    except NotFound as err:
        raise ImagesError(str(err)) from None
    raise ImagesError(f"no .png/.jpg/.jpeg or .npz under {store.uri()}; give a folder of images, an .npz, "
                     "or a built-in data set name (digits)")


def _builtin(name: str, sample_shape: tuple) -> Images:
    from ganflow.config import DataConfig
    from ganflow.data import build_dataset

    channels, resolution = sample_shape[0], sample_shape[-1]
    data = build_dataset(DataConfig(name=name, resolution=resolution, channels=channels))
    if data.x is None or tuple(data.shape) != tuple(sample_shape):
        raise ImagesError(f"{name} does not give images shaped {tuple(sample_shape)}")
    names = data.classes or [str(k) for k in range(data.num_classes)]
    labels = [names[k] for k in data.y.tolist()] if data.y is not None else [None] * len(data.x)
    return Images(data.x, labels, [f"{name}[{i}]" for i in range(len(data.x))])


def _decode(store, keys: List[str], sample_shape: tuple) -> Images:
    from ganflow.data.images import BadImage, class_names, decode_image

    channels, resolution = sample_shape[0], sample_shape[-1]
    labelled = bool(class_names(keys, ""))
    arrays = []
    for key in keys:
        try:
            arrays.append(decode_image(store.get_bytes(key), store.uri(key), resolution, channels))
        except BadImage as err:
            raise ImagesError(str(err)) from None
    x = torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1
    labels = [k.rsplit("/", 2)[-2] if labelled else None for k in keys]
    return Images(x, labels, [store.uri(k) for k in keys])


def _npz(store, keys: List[str], sample_shape: tuple) -> Images:
    xs, labels, sources = [], [], []
    for key in keys:
        with np.load(io.BytesIO(store.get_bytes(key))) as arrays:
            if "images" not in arrays:
                raise ImagesError(f"{store.uri(key)} has no `images` array (ganflow sample's npz format)")
            x = arrays["images"]
            if tuple(x.shape[1:]) != tuple(sample_shape):
                raise ImagesError(f"{store.uri(key)} holds images shaped {tuple(x.shape[1:])}; "
                                 f"this run's are {tuple(sample_shape)}")
            xs.append(torch.from_numpy(x.astype(np.float32)))
            y = arrays["labels"].tolist() if "labels" in arrays else [None] * len(x)
            labels += [None if v is None else str(v) for v in y]
            sources += [f"{store.uri(key)}[{i}]" for i in range(len(x))]
    return Images(torch.cat(xs).clamp(-1, 1), labels, sources)
