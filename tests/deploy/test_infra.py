"""infra/ definitions, checked offline: what a user would trip over if they drifted (the image
against the cluster definitions, the compose cluster's usage lines against ganflow), and the
Terraform IAM policy enforced by a real S3 endpoint (moto's server with IAM checks on) against
the requests ganflow and Ray Train's storage actually make."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import string
import subprocess

import pytest
import yaml

from ganflow.job import load_job
from ganflow.commands.submit import prepare_train
from ganflow.store import S3Options, StorageError, open_store
from ganflow.store.s3 import pyarrow_s3
from tests.conftest import JOBS, ROOT

INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
DOCKERFILE = INFRA / "Dockerfile"
TERRAFORM = INFRA / "terraform"
CLUSTER = ROOT / "cluster"
CREDENTIAL = re.compile(r"(SECRET|TOKEN|PASSWORD|API_KEY|ACCESS_KEY|ROOT_USER)", re.I)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def usage_command(text: str, verb: str) -> list:
    """The `ganflow VERB ...` usage line of a commented file, continuation lines joined."""
    lines = [ln.lstrip("#").strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if re.search(rf"\bganflow {verb}\b", ln))
    command = lines[start]
    while command.endswith("\\"):
        start += 1
        command = command[:-1] + " " + lines[start]
    words = shlex.split(command)
    return words[words.index("ganflow") + 2:]


def render(template: str, **values: str) -> dict:
    """A policy as Terraform's templatefile() renders it (the same ${name} placeholders)."""
    return json.loads(string.Template((TERRAFORM / "policies" / template).read_text()).substitute(values))


# --- docker-compose: a local cluster ----------------------------------------------------------


def test_compose_keeps_credentials_out_and_ports_on_loopback():
    spec = compose()
    assert {"minio", "create-bucket", "ray-head", "ray-worker"} <= set(spec["services"])
    for name, service in spec["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for key, value in (service.get("environment") or {}).items():
            if CREDENTIAL.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), f"{name}.{key} must come from the environment"


def test_compose_ray_nodes_form_one_cluster_on_the_ganflow_image():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    for node in (head, worker):  # one image, built from infra/Dockerfile with the repo as context
        assert node["image"] == "ganflow:local"
        assert (COMPOSE.parent / node["build"]["context"] / node["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert node["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    [port] = [a.split("=")[1] for a in head["command"] if a.startswith("--port=")]
    assert f"--address=ray-head:{port}" in worker["command"]
    assert "--dashboard-host=0.0.0.0" in head["command"] and "127.0.0.1:8265:8265" in head["ports"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_the_compose_usage_lines_submit_a_valid_job_to_that_cluster(tmp_path):
    text = COMPOSE.read_text()
    args = usage_command(text, "submit")
    job, overrides = args[0], [a for a in args[1:] if "=" in a and not a.startswith("-")]
    assert args[args.index("--address") + 1] == "http://127.0.0.1:8265"
    cfg = load_job(ROOT / job, overrides)
    assert cfg.storage.uri == "s3://ganflow/runs" and cfg.storage.endpoint_url == "http://minio:9000"
    assert "mc mb --ignore-existing local/ganflow" in text  # the bucket the job writes to exists
    assert "9000" in str(compose()["services"]["minio"]["ports"])
    prepare_train(str(ROOT / job), overrides, tmp_path)  # what `ganflow submit` sends: it accepts the job
    assert load_job(tmp_path / "job.yaml").storage.endpoint_url == "http://minio:9000"
    sample = usage_command(text, "sample")
    assert sample[0].startswith("s3://ganflow/runs/")


# --- the image against the cluster definitions -------------------------------------------------


def dockerfile_arg(name: str) -> str:
    [value] = re.findall(rf"^ARG {name}=(\S*)$", DOCKERFILE.read_text(), re.M)
    return value


def test_the_image_matches_the_cluster_definitions():
    ray_version = dockerfile_arg("RAY_VERSION")
    images = set()
    for path in sorted(CLUSTER.glob("kuberay-*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        assert spec["rayVersion"] == ray_version, f"{path.name}: rayVersion differs from infra/Dockerfile's Ray"
        images |= set(re.findall(r"image: (\S+)", path.read_text()))
    images.add(yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())["docker"]["image"])
    assert len(images) == 1, f"the cluster definitions name different images: {images}"
    assert f"-t {images.pop()} ." in DOCKERFILE.read_text()  # the build line makes the image they run


def test_the_rayjob_entrypoint_runs_a_job_the_image_ships():
    text = DOCKERFILE.read_text()
    assert "WORKDIR /opt/ganflow" in text and re.search(r"^COPY .*\bjobs \./jobs$", text, re.M)
    rayjob = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    words = shlex.split(rayjob["spec"]["entrypoint"].replace("BUCKET", "team-bucket"))
    assert words[:4] == ["python", "-m", "ganflow.cli", "train"]
    job = words[4]
    assert job.startswith("/opt/ganflow/jobs/")
    cfg = load_job(JOBS / job.removeprefix("/opt/ganflow/jobs/"), words[5:])
    assert cfg.storage.uri == "s3://team-bucket/runs"


def test_the_docker_context_sends_only_what_the_image_copies():
    allowed = [ln[1:].rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.startswith("!")]
    copied = {src for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.M)
              for src in line.split()}
    assert copied == set(allowed) == {"pyproject.toml", "README.md", "ganflow", "jobs"}
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()  # everything else stays out (.venv, runs, wandb)


# --- Terraform ---------------------------------------------------------------------------------


# CI has no terraform (no package registry it reaches ships it): this runs where a developer has it.
@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed here (nor in CI); "
                    "run `terraform fmt -check -recursive infra/terraform` where it is")
def test_terraform_is_formatted():
    out = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_the_policies_name_their_actions_and_only_the_bucket_prefix():
    policy = render("storage.json", bucket="team-bucket", prefix="ganflow")
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        assert all(a.startswith("s3:") and "*" not in a for a in actions)
        granted |= {(a, statement["Resource"]) for a in actions}
        if statement["Resource"] == "arn:aws:s3:::team-bucket":  # listing: only under the prefix
            assert actions == ["s3:ListBucket"]
            assert set(statement["Condition"]["StringLikeIfExists"]["s3:prefix"]) == {"ganflow", "ganflow/*"}
        else:
            assert statement["Resource"] == "arn:aws:s3:::team-bucket/ganflow/*"
    assert ("s3:DeleteObject", "arn:aws:s3:::team-bucket/ganflow/*") in granted

    from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

    autoscaler = render("autoscaler.json", cluster_name="ganflow", worker_role_arn="arn:aws:iam::1:role/ganflow-ray-worker")
    by_action = {a: s for s in autoscaler["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert by_action["iam:PassRole"]["Resource"] == "arn:aws:iam::1:role/ganflow-ray-worker"
    assert by_action["ec2:TerminateInstances"]["Condition"] == {
        "StringEquals": {f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}": "ganflow"}}
    assert not any(a.startswith("s3:") for a in by_action)


def test_terraform_and_the_launcher_config_agree():
    main = (TERRAFORM / "main.tf").read_text()
    for template in ("storage.json", "autoscaler.json"):  # every placeholder is given a value
        placeholders = set(re.findall(r"\$\{(\w+)\}", (TERRAFORM / "policies" / template).read_text()))
        call = re.search(rf'templatefile\("\$\{{path.module\}}/policies/{template}", \{{(.*?)\}}\)', main, re.S).group(1)
        assert placeholders == set(re.findall(r"^\s*(\w+)\s*=", call, re.M)), template
    launcher = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    default = re.search(r'variable "cluster_name" \{.*?default\s*=\s*"([^"]+)"', (TERRAFORM / "variables.tf").read_text(), re.S)
    assert default.group(1) == launcher["cluster_name"]
    profiles = set(re.findall(r'resource "aws_iam_instance_profile" "\w+" \{\s*name = "([^"]+)"', main))
    nodes = launcher["available_node_types"]
    assert nodes[launcher["head_node_type"]]["node_config"]["IamInstanceProfile"]["Arn"].endswith("/ganflow-ray-head")
    assert {n["node_config"]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for n in nodes.values()} == profiles


# --- the storage policy, enforced by a real S3 endpoint ----------------------------------------


@pytest.fixture
def as_iam_user(s3, monkeypatch):
    """Returns a function that switches this process to a new IAM user holding `policy` on the
    loopback server, with moto's IAM enforcement on until the test ends."""
    import boto3
    from moto import settings

    endpoint, _ = s3
    iam = boto3.session.Session().client("iam", endpoint_url=endpoint, region_name="us-east-1")
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT

    def switch(name: str, policy: dict):
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="ganflow", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from here on every request is checked

    yield switch
    settings.INITIAL_NO_AUTH_ACTION_COUNT = saved


def for_moto(policy: dict, bucket: str) -> dict:
    """moto authorizes two requests by names AWS does not use: HeadBucket (AWS: s3:ListBucket on
    the bucket, which the policy grants) and DeleteObjects (AWS: s3:DeleteObject on each key).
    Grant moto's names on the bucket; everything else is the policy as Terraform applies it."""
    policy = copy.deepcopy(policy)
    policy["Statement"].append({"Effect": "Allow", "Action": ["s3:HeadBucket", "s3:DeleteObject"],
                                "Resource": f"arn:aws:s3:::{bucket}"})
    return policy


def test_the_storage_policy_lets_ganflow_and_ray_work_in_the_prefix_and_nowhere_else(s3, as_iam_user, tmp_path):
    endpoint, bucket = s3
    as_iam_user("ganflow-ray", for_moto(render("storage.json", bucket=bucket, prefix="ganflow"), bucket))
    options = S3Options(endpoint_url=endpoint)

    runs = open_store(f"s3://{bucket}/ganflow/runs", options)  # what a job does with storage.uri
    runs.check()
    runs.put_bytes("r1/config.yaml", b"seed: 0\n")
    weights = tmp_path / "G.safetensors"
    weights.write_bytes(b"\0" * (17 << 20))  # above the 16 MiB multipart threshold
    runs.put_file("r1/checkpoints/step_00000010/G.safetensors", weights)
    assert runs.list("r1") == ["r1/checkpoints/step_00000010/G.safetensors", "r1/config.yaml"]
    assert runs.get_bytes("r1/config.yaml") == b"seed: 0\n"
    ray_storage = pyarrow_s3(options)  # Ray Train's storage_filesystem writes its checkpoints with this
    ray_storage.create_dir(f"{bucket}/ganflow/runs/r1/ray/checkpoint_000000")
    with ray_storage.open_output_stream(f"{bucket}/ganflow/runs/r1/ray/checkpoint_000000/state.pkl") as out:
        out.write(b"x")
    runs.delete_prefix("r1")
    assert runs.list("r1") == []

    for outside in (f"s3://{bucket}/other", f"s3://{bucket}/ganflow-old"):  # a sibling prefix too
        with pytest.raises(StorageError, match="AccessDenied"):
            open_store(outside, options).put_bytes("x", b"1")
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        ray_storage.create_dir(f"{bucket}/other/ray")


def test_a_delete_the_bucket_refuses_is_reported_not_ignored(s3, as_iam_user):
    endpoint, bucket = s3
    open_store(f"s3://{bucket}/ganflow/runs", S3Options(endpoint_url=endpoint)).put_bytes("r1/a.txt", b"a")
    no_delete = render("storage.json", bucket=bucket, prefix="ganflow")
    for statement in no_delete["Statement"]:
        if isinstance(statement["Action"], list):
            statement["Action"].remove("s3:DeleteObject")
    no_delete["Statement"].append({"Effect": "Allow", "Action": "s3:HeadBucket", "Resource": f"arn:aws:s3:::{bucket}"})
    as_iam_user("no-delete", no_delete)
    runs = open_store(f"s3://{bucket}/ganflow/runs", S3Options(endpoint_url=endpoint))
    # S3 answers a bulk delete with 200 and lists the refused keys in the body
    with pytest.raises(StorageError, match=r"1 object\(s\) under .*r1 were not deleted \(AccessDenied"):
        runs.delete_prefix("r1")
    assert runs.list("r1") == ["r1/a.txt"]
