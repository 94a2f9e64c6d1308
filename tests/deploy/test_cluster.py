"""cluster/: the Ray cluster launcher config validates against Ray's own cluster-config schema
(the one `ray up` uses), the KubeRay manifests against the KubeRay CRD schemas (vendored in kuberay/);
credentials come from instance profiles and Kubernetes Secrets, never from the files."""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
CRDS = Path(__file__).resolve().parent / "kuberay"  # see its README for the source and version
CREDENTIAL = re.compile(r"(SECRET|TOKEN|PASSWORD|API_KEY|ACCESS_KEY)", re.I)


def crd_schema(kind: str) -> dict:
    return json.loads(gzip.decompress((CRDS / f"{kind.lower()}s.v1.schema.json.gz").read_bytes()))


def kuberay_manifests():
    return sorted(CLUSTER.glob("kuberay-*.yaml"))


def test_the_launcher_config_is_one_ray_up_accepts():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs before launching anything
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}  # training never lands on the head
    assert nodes["gpu_worker"]["min_workers"] == 0 and nodes["gpu_worker"]["max_workers"] == config["max_workers"]
    for name, node in nodes.items():  # S3 through the instance profiles infra/terraform makes, not keys
        role = "head" if name == config["head_node_type"] else "worker"
        assert node["node_config"]["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/ganflow-ray-{role}")
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("path", kuberay_manifests(), ids=lambda p: p.name)
def test_kuberay_manifests_validate_against_the_crds(path):
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "ray.io/v1"
    jsonschema.validate(manifest, crd_schema(manifest["kind"]))
    broken = copy.deepcopy(manifest)
    spec = broken["spec"].get("rayClusterSpec", broken["spec"])
    spec["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, crd_schema(manifest["kind"]))


def _containers(node):
    if isinstance(node, dict):
        if "containers" in node:
            yield from node["containers"]
        for value in node.values():
            yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


@pytest.mark.parametrize("path", [*kuberay_manifests(), CLUSTER / "aws-gpu.yaml"], ids=lambda p: p.name)
def test_no_credential_is_written_in_a_cluster_file(path):
    text = path.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
    manifest = yaml.safe_load(text)
    for container in _containers(manifest):
        for env in container.get("env", []):
            if CREDENTIAL.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), env["name"]
    if path.name.startswith("kuberay-"):
        containers = list(_containers(manifest))
        assert containers and all(
            {"secretRef": {"name": "ganflow-credentials"}} in c.get("envFrom", []) for c in containers if c["name"].startswith("ray-"))
