"""The Ray Data stream of an `s3://` image folder (data.path), which Ray Train splits into one
shard per worker (`ganflow.data.images.StreamedBatches` reads a shard)."""

from __future__ import annotations

from typing import Dict, List

from ganflow.config import DataConfig
from ganflow.data.images import IMAGE_SUFFIXES, square_resize
from ganflow.store import S3Options
from ganflow.store.s3 import pyarrow_s3


def ray_dataset(cfg: DataConfig, options: S3Options, classes: List[str]):
    """The Ray Data stream of an s3:// image folder: decoded, cropped and resized in Ray Data's
    tasks, labelled from the class folder, in a shuffled file order."""
    import ray.data

    channels, resolution = cfg.channels or 3, cfg.resolution
    index = {c: i for i, c in enumerate(classes)}

    def prepare(row: Dict) -> Dict:
        from PIL import Image

        image = square_resize(Image.fromarray(row["image"]), resolution, channels)
        label = index[row["path"].rsplit("/", 2)[-2]] if index else -1
        return {"image": image, "label": label, "path": row["path"]}

    path = cfg.path.removeprefix("s3://").rstrip("/")
    ds = ray.data.read_images(path, filesystem=pyarrow_s3(options), mode="L" if channels == 1 else "RGB",
                              include_paths=True, shuffle="files", file_extensions=[s[1:] for s in IMAGE_SUFFIXES])
    return ds.map(prepare)
