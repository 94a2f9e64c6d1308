"""What the verbs share: exit codes, the one-line error, and opening a trained generator by any
name a user gives it (a run, a checkpoint, local or s3://, or a W&B artifact)."""

from __future__ import annotations

from pathlib import Path

from ganflow.api import resolve_location  # noqa: F401  (the verbs import it from here)
from ganflow.commands.exits import EXIT_FAILURE, EXIT_USAGE, die  # noqa: F401  (the verbs import them from here)
from ganflow.core.sampling import SampleError
from ganflow.ray.cluster import RayAddressError
from ganflow.run.checkpoint import CheckpointError
from ganflow.run.generator import LoadedGenerator
from ganflow.run.generator import load_generator as _load_generator
from ganflow.store import StorageError
from ganflow.tracking.settings import TrackingError

# What opening a trained run can raise with a message meant for the user: a bad location or
# checkpoint, storage, a `wandb:` name, a generator the command cannot use, a cluster address of the wrong form.
RUN_ERRORS = (CheckpointError, SampleError, StorageError, TrackingError, RayAddressError)


def load_generator(run_or_checkpoint: str | Path, with_discriminator: bool = False) -> LoadedGenerator:
    """The generator (and D, if asked) of a run's newest intact checkpoint, or of one checkpoint."""
    return _load_generator(resolve_location(run_or_checkpoint), with_discriminator)
