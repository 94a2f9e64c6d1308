"""A run has one writer (issue 30, fault 7): the lease is taken by one of many racing takers, refused
while fresh with who holds it, taken over when stale, when its holder's process is gone, or with
--force-takeover; a holder that lost it learns so at its next heartbeat; a refused `--resume` leaves
every byte of the run as it was. On a local directory and on the loopback S3 server."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from ganflow.run import lease as lease_mod
from ganflow.run.layout import RunLayout
from ganflow.run.lease import Holder, Lease, LeaseHeld
from ganflow.store import S3Options, open_store
from tests.conftest import JOBS, cli_here


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "run"))
    endpoint, bucket = request.getfixturevalue("s3")
    return open_store(f"s3://{bucket}/exp/run", S3Options(endpoint_url=endpoint))


def written_by(store, **fields) -> None:
    now = time.time()
    holder = {"holder": "other", "host": socket.gethostname(), "pid": os.getpid(), "since": now, "heartbeat": now,
              **fields}
    store.put_bytes(RunLayout.LEASE, Holder(**holder).encode())


def test_of_many_racing_takers_exactly_one_holds_the_lease(store):
    won, refused = [], []

    def take():
        try:
            won.append(Lease.take(store, "run"))
        except LeaseHeld as err:
            refused.append(str(err))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert all("being written by" in r or "taking its lease" in r for r in refused)


def test_a_fresh_lease_is_refused_naming_its_holder_and_a_released_one_is_taken(store):
    with Lease.take(store, "run") as held:
        with pytest.raises(LeaseHeld, match=rf"run run is being written by {socket.gethostname()} pid {os.getpid()} "
                                            r"since .* wait for it, or pass --force-takeover"):
            Lease.take(store, "run")
    assert Holder.parse(store.get_bytes(RunLayout.LEASE)).released
    assert Lease.take(store, "run").me.holder != held.me.holder


def test_a_stale_lease_or_one_whose_process_is_gone_is_taken_over(store):
    written_by(store, host="elsewhere", heartbeat=time.time() - lease_mod.LEASE_TTL_S - 1)
    Lease.take(store, "run")
    written_by(store, pid=2**22 + 7)  # this host, no such process
    Lease.take(store, "run")
    written_by(store, host="elsewhere")  # fresh, another host: only by force
    with pytest.raises(LeaseHeld):
        Lease.take(store, "run")
    assert Lease.take(store, "run", force=True).me.pid == os.getpid()


def test_a_holder_whose_lease_was_taken_over_learns_it_at_its_next_heartbeat(store):
    first = Lease.take(store, "run")
    assert first.beat() and not first.lost
    Lease.take(store, "run", force=True)
    assert not first.beat() and first.lost


def test_a_resume_refused_by_the_lease_leaves_every_byte_of_the_run(tmp_path):
    from ganflow.job import load_job
    from ganflow.run.run import Run

    cfg = load_job(JOBS / "ring.yaml", [f"storage.uri={tmp_path}"])
    run = Run.create(str(tmp_path), cfg.name)
    run.write_config(cfg.to_yaml())
    run.write_status("running")
    written_by(run.store, host="gpu-node-7")  # a live writer elsewhere
    before = {p: p.read_bytes() for p in Path(run.uri).rglob("*") if p.is_file()}
    proc = cli_here("train", "--resume", run.uri, "train.steps=5")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"ganflow: error: run {run.uri} is being written by gpu-node-7 pid {os.getpid()}" in line
    assert {p: p.read_bytes() for p in Path(run.uri).rglob("*") if p.is_file()} == before
