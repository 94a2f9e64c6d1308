"""Ray actors for the CLI verbs that fan work out (synth, score)."""

from __future__ import annotations

from typing import Iterator, Optional

from ganflow.ray.cluster import ensure_ray


def map_on_actors(cls, init_args: tuple, method: str, items: list, workers: int, verb: str,
                  address: Optional[str] = None) -> Iterator:
    """`cls(*init_args).method(*item)` for each item, on `workers` 1-CPU Ray actors (an actor
    loads its checkpoint once, not once per item); results as they come, in the order of `items`."""
    import ray
    from ray.util import ActorPool

    ensure_ray(address, verb=verb)
    actor_cls = ray.remote(num_cpus=1)(cls)
    pool = ActorPool([actor_cls.remote(*init_args) for _ in range(workers)])
    yield from pool.map(lambda actor, item: getattr(actor, method).remote(*item), items)
