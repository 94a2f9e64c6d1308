"""Where a worker's batches come from: the one choice between a data set in memory, a prepared set
read image by image, and a stream of a bucket's images (this worker's shard of it). Every source
then gets the same treatment, so data.xflip mirrors each of them."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ganflow.core.batch import BatchPlan
from ganflow.data.dataset import BatchSampler, Dataset, flipped, in_memory_batches
from ganflow.data.images import StreamedBatches


def dataset_batches(dataset: Dataset, plan: BatchPlan, seed: int, labels: bool, rank: int = 0,
                    device: torch.device | str = "cpu", flip: bool = False, shard: Optional[Any] = None):
    """This rank's `batches(index)` -> (images, labels or None) of global batch `index`. `labels`: the
    model takes them; `flip`: data.xflip; `shard`: this worker's part of a streamed data set (an
    iterable with Ray Data's `iter_batches`), which a streamed data set needs."""
    if dataset.streamed:
        if shard is None:
            raise ValueError("a streamed data set is read from its shard of the stream; none was given")
        batches = StreamedBatches(shard, plan.per_worker, seed, device, labels)
    elif dataset.source is not None:
        batches = dataset.source.batches(BatchSampler(len(dataset), plan, seed, rank), dataset.rows,
                                         dataset.y if labels else None, device)
    else:
        batches = in_memory_batches(dataset, plan, seed, labels, rank, device)
    return flipped(batches, seed, plan, rank) if flip else batches
