"""Ray worker setup hooks. Kept free of torch: a hook runs before Ray sets a worker's
OMP_NUM_THREADS from its CPUs, and torch imported then would use every core of the machine in
every worker (two 1-CPU actors on 2 cores ran 2.5x slower)."""

from __future__ import annotations

import os


def pin_state_api() -> None:
    """Worker setup hook (in-process Ray, submitted jobs): the State API, left to find its cluster,
    picks the newest one on the machine, or refuses when there are several ("Found multiple active
    Ray instances"); told this one's address, it asks the right cluster."""
    import ray

    if not os.environ.get("RAY_ADDRESS"):  # unset, or set empty (`RAY_ADDRESS= ganflow train`: a local Ray)
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


# the runtime_env that installs it: in-process Ray, drivers joining a cluster, submitted jobs
PIN_STATE_API = {"worker_process_setup_hook": "ganflow.ray.hooks.pin_state_api"}
