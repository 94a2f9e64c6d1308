"""How one global batch is split: across workers, then within a worker into the parts of gradient
accumulation. `BatchPlan` is made once from the config and the world; the data, the GAN step, the
config checks and evaluation ask it instead of dividing for themselves. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


def share(total: int, rank: int, world: int) -> slice:
    """The `rank`-th of `world` contiguous shares of `total` rows (equal when `world` divides
    `total`; else they differ by one): 1 worker x all rows == 2 workers x their halves."""
    return slice(total * rank // world, total * (rank + 1) // world)


@dataclass(frozen=True)
class BatchPlan:
    """`global_batch` rows a step (train.batch_size) over `world` workers, each computing its share in
    parts of `part_size` rows (train.batch_per_worker; None: the whole share in one part)."""

    global_batch: int
    world: int = 1
    part_size: Optional[int] = None

    @classmethod
    def of(cls, train, world: int = 1) -> "BatchPlan":
        """The plan of a TrainConfig on `world` workers."""
        return cls(train.batch_size, world, train.batch_per_worker)

    def problem(self) -> Optional[Tuple[str, str]]:
        """(config key, what is wrong) when the batch does not split evenly, else None."""
        if self.global_batch % self.world:
            return "train.batch_size", f"{self.global_batch} is not divisible by {self.world}"
        if self.part_size and self.per_worker % self.part_size:
            return "train.batch_per_worker", (f"{self.part_size} does not divide each worker's share of train.batch_size="
                                              f"{self.global_batch} on {self.world} worker(s)")
        return None

    @property
    def per_worker(self) -> int:
        return self.global_batch // self.world

    @property
    def parts(self) -> int:
        """Forward-backward passes a worker computes its share in (gradient accumulation)."""
        return self.per_worker // self.part_size if self.part_size else 1

    @property
    def part_rows(self) -> int:
        """Rows of one forward-backward pass."""
        return self.per_worker // self.parts

    def rows(self, rank: int, total: Optional[int] = None) -> slice:
        """Worker `rank`'s rows of a global batch of `total` rows (default: the training batch)."""
        return share(self.global_batch if total is None else total, rank, self.world)

    def part_ranks(self, rank: int) -> List[Tuple[int, int]]:
        """Worker `rank`'s parts, each as (index, count) of an equal slice of the global batch."""
        k = self.parts
        return [(rank * k + c, self.world * k) for c in range(k)]

    def shrink_problem(self, factor: int) -> Optional[Tuple[str, str]]:
        """(config key, what is wrong) when a batch `factor` times smaller would not split the same way."""
        if self.global_batch % (factor * self.world):
            return "train.batch_size", f"{self.global_batch} must be divisible by {factor} x {self.world} worker(s)"
        if (self.part_size or 0) % factor:
            return "train.batch_per_worker", f"make it a multiple of {factor}, got {self.part_size}"
        return None
