"""Data sets by registry name, each declaring its traits (images or 2D points, labelled, needs a
path, the metrics and extractor that fit it), and the stateless batch sampler every worker uses."""

from ganflow.data import images, prepared, toy  # noqa: F401  (registering the built-in data sets)
from ganflow.data.dataset import (DATASETS, BatchSampler, Dataset, DataSpec, build_dataset, in_memory_batches, register,
                                  select_classes, spec)
from ganflow.data.source import dataset_batches

__all__ = ["DATASETS", "BatchSampler", "DataSpec", "Dataset", "build_dataset", "dataset_batches", "in_memory_batches",
           "register", "select_classes", "spec"]
