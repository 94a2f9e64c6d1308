"""The private Ray APIs ganflow touches live in ganflow/ray/compat.py, checked against ray 2.60.0:
with this Ray each works; with a Ray that moved one, a warning and nothing else."""

from __future__ import annotations

import logging
import sys

import pytest

from ganflow.ray import compat

PRIVATE = {
    compat.quiet_ray_train_report_logs: "ray.train.v2._internal.execution",
    compat.use_auth_token_if_there: "ray._private.authentication.authentication_token_setup",
    compat.train_report_poll_env: "ray.train.v2._internal.constants",
}


@pytest.mark.parametrize("call", list(PRIVATE), ids=lambda f: f.__name__)
def test_each_private_ray_api_works_here_and_a_ray_without_it_costs_a_warning(call, monkeypatch, caplog):
    def ours():
        return [r.getMessage() for r in caplog.records if r.name == "ganflow.ray"]

    with caplog.at_level(logging.WARNING, logger="ganflow.ray"):
        call()
    assert not ours(), "with the Ray this was checked against, no warning"
    monkeypatch.setitem(sys.modules, PRIVATE[call], None)  # as if Ray had moved it: importing it fails
    with caplog.at_level(logging.WARNING, logger="ganflow.ray"):
        call()
    assert len(ours()) == 1 and ours()[0].startswith("this Ray")


def test_ray_processes_of_ours_poll_ray_train_reports_every_half_second_unless_the_user_says(ray_cluster, monkeypatch):
    import os

    import ray

    name = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train V2's controller reads it; 2 s when unset
    # the suite sets its own (conftest), which ganflow passes on as a user's: it reaches every actor
    # of the job, the Train controller among them
    seen = ray.get(ray.remote(num_cpus=0)(lambda: os.environ.get(name)).remote())
    assert seen == os.environ[name] == "0.2"
    monkeypatch.delenv(name)
    assert compat.train_report_poll_env() == {name: compat.REPORT_POLL_S} == {name: "0.5"}
    monkeypatch.setenv(name, "3")
    assert compat.train_report_poll_env() == {name: "3"}


def test_a_worker_given_an_empty_ray_address_asks_its_own_clusters_state_api(ray_cluster, monkeypatch):
    """`RAY_ADDRESS= ganflow train ...` (an in-process Ray): left empty, the State API that Ray Train's
    placement-group cleaner asks found the machine's last `ray start` cluster, and every run's end
    waited 12 s for the cleaner to give up on it."""
    import os

    from ganflow.ray.hooks import pin_state_api

    monkeypatch.setenv("RAY_ADDRESS", "")
    pin_state_api()
    assert os.environ["RAY_ADDRESS"] == ray_cluster
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")  # a cluster the user named stays named
    pin_state_api()
    assert os.environ["RAY_ADDRESS"] == "10.1.2.3:6379"
