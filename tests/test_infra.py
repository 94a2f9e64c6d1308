"""infra/ definitions, checked offline: what a user would trip over if they drifted."""

from __future__ import annotations

import re
import shlex

import yaml

from ganflow import config
from tests.conftest import JOBS, ROOT

COMPOSE = ROOT / "infra" / "docker-compose.yml"


def test_minio_compose_keeps_credentials_out_and_ports_on_loopback():
    spec = yaml.safe_load(COMPOSE.read_text())
    for name, service in spec["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for key, value in (service.get("environment") or {}).items():
            assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), f"{name}.{key} must come from the environment"
    assert "minio" in spec["services"] and "create-bucket" in spec["services"]


def test_the_compose_files_usage_line_is_a_valid_ganflow_job():
    [line] = [ln for ln in COMPOSE.read_text().splitlines() if "ganflow train" in ln]
    args = shlex.split(line.lstrip("# "))[2:]
    cfg = config.load(ROOT / args[0], args[1:])
    assert cfg.storage.uri == "s3://ganflow/runs" and cfg.storage.endpoint_url == "http://127.0.0.1:9000"
    assert "mc mb --ignore-existing local/ganflow" in COMPOSE.read_text()
    assert (JOBS / "quickstart.yaml").samefile(ROOT / args[0])
