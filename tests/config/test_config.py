"""Config loading: every shipped job validates; every bad config is one line naming its key, exit 2."""

from __future__ import annotations

import pytest

from ganflow import cli, config
from ganflow.job import load_job
from tests.conftest import JOBS, run_cli


@pytest.mark.parametrize("job", sorted(p for p in JOBS.glob("*.yaml") if not p.name.startswith("sweep_")), ids=lambda p: p.name)
def test_every_shipped_job_validates(job):
    cfg = load_job(job)
    assert cfg.train.batch_size % cfg.scaling.num_workers == 0


@pytest.mark.parametrize("spec", sorted(JOBS.glob("sweep_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_validates(spec):
    from ganflow.sweep.spec import load_spec

    loaded = load_spec(spec)
    assert loaded.space and loaded.metric and loaded.mode in ("min", "max") and loaded.base.eval.every


def test_overrides_reach_nested_fields():
    cfg = load_job(JOBS / "quickstart.yaml", ["train.steps=500", "optim.g.lr=1e-4", "scaling.resources_per_worker.GPU=1"])
    assert cfg.train.steps == 500
    assert cfg.optim.g.lr == 1e-4
    assert cfg.optim.d.lr == 2e-4
    assert cfg.scaling.resources_per_worker == {"CPU": 2.0, "GPU": 1.0}


def test_loss_defaults_follow_the_loss():
    wgan = load_job(None, ["loss.name=wgan-gp"])
    assert (wgan.loss.gp_weight, wgan.loss.n_critic) == (10.0, 5)
    hinge = load_job(None, ["loss.name=hinge"])
    assert (hinge.loss.gp_weight, hinge.loss.n_critic) == (0.0, 1)


def test_resolving_the_defaults_leaves_the_loaded_config_as_it_was():
    from ganflow.job import resolve

    loaded = config.load(None, ["loss.name=wgan-gp", "model.spectral_norm=true"])
    resolved = resolve(loaded)
    assert (loaded.loss.gp_weight, loaded.loss.n_critic, loaded.model.d_norm) == (None, None, "batch")
    assert (resolved.loss.gp_weight, resolved.loss.n_critic, resolved.model.d_norm) == (10.0, 5, "none")


def test_config_round_trips_through_dict_and_yaml(tmp_path):
    cfg = load_job(JOBS / "quickstart.yaml", ["loss.name=wgan-gp"])
    assert config.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert load_job(tmp_path / "c.yaml") == cfg
    assert cfg.hash() == config.from_dict(cfg.to_dict()).hash()


BAD_CONFIGS = [
    (["optim.g.lr=-1e-4"], "optim.g.lr", "> 0"),
    (["optim.d.lr=0"], "optim.d.lr", "> 0"),
    (["train.batch_size=63", "scaling.num_workers=2"], "train.batch_size", "divisible"),
    (["data.resolution=48"], "data.resolution", "power of two"),
    (["data.resolution=4"], "data.resolution", "power of two"),
    (["data.name=cifar"], "data.name", "choose one of"),
    (["model.name=stylegan9"], "model.name", "choose one of"),
    (["loss.name=wasserstein"], "loss.name", "choose one of"),
    (["train.steps=0"], "train.steps", "> 0"),
    (["train.stepz=10"], "train.stepz", "unknown key"),
    (["optim.g.learning_rate=1e-3"], "optim.g.learning_rate", "unknown key"),
    (["train.steps=ten"], "train.steps", "ten"),
    (["train.ema_decay=1.5"], "train.ema_decay", "[0, 1)"),
    (["optim.g.weight_decay=nan"], "optim.g.weight_decay", "finite"),  # issue 30, fault 11
    (["scaling.resources_per_worker.CPU=nan"], "scaling.resources_per_worker.CPU", "finite"),
    (["optim.d.betas=[0.5,inf]"], "optim.d.betas[1]", "finite"),
    (["train.seed=-1"], "train.seed", "[0, 2**63)"),
    (["tracking.wandb.tags=[a,${oc.env:HOME}]"], "tracking.wandb.tags", "not valid YAML"),  # a YAML traceback before
    (["data.name=prepared", "data.path=s3:/bucket/set"], "data.path", "write s3://bucket/prefix"),
    (["train.precision=fp8"], "train.precision", "choose one of"),
    (["train.precision=bf16"], "train.precision", "use_gpu"),
    (["scaling.num_workers=0"], "scaling.num_workers", "worker count >= 1"),
    (["scaling.num_workers=[2,1]", "train.max_failures=3"], "scaling.num_workers", "MIN <= MAX"),
    (["scaling.num_workers=[1,3]", "train.max_failures=3"], "train.batch_size", "64 is not divisible by 3 (scaling.num_workers=[1, 3]"),
    (["scaling.num_workers=[1,2]"], "train.max_failures", "set it > 0"),
    (["scaling.placement_strategy=spread"], "scaling.placement_strategy", "STRICT_SPREAD"),
    (["train.batch_per_worker=48"], "train.batch_per_worker", "does not divide"),
    (["loss.r1_gamma=1", "scaling.sync_batchnorm=true", "scaling.use_gpu=true", "scaling.resources_per_worker.CPU=0"],
     "scaling.sync_batchnorm", "no double backward"),
    (["data.name=ring"], "model.name", "mlp"),
    (["data.name=images"], "data.path", "required"),
    (["model.name=mlp"], "model.name", "2D data"),
    (["loss.name=wgan-gp", "loss.gp_weight=0"], "loss.gp_weight", "> 0"),
    (["loss.r1_gamma=-1"], "loss.r1_gamma", ">= 0"),
    (["optim.g.betas=[0.5]"], "optim.g.betas", "two numbers"),
    (["train.augment=rotate"], "train.augment", "choose one of"),
    (["model.g_norm=layer"], "model.g_norm", "choose one of"),
    (["scaling.sync_batchnorm=true"], "scaling.sync_batchnorm", "GPU"),
    (["data.name=ring", "model.name=mlp", "train.augment=color"], "train.augment", "images only"),
    (["notakey"], "notakey", "dotted.key=value"),
    (["eval.metrics=[fid,sharpness]"], "eval.metrics", "choose one of"),
    (["eval.metrics=[modes]"], "eval.metrics", "2D data"),
    (["eval.extractor=inception", "eval.metrics=[fid,classes]"], "eval.metrics", "eval.extractor=digits"),
    (["eval.extractor=clip"], "eval.extractor", "choose one of"),
    (["eval.metrics=[pr]", "eval.num_samples=3"], "eval.num_samples", ">= 4"),
    (["eval.best=fd_digits"], "eval.best", "choose one of fid"),
    (["data.classes=[0,10]"], "data.classes", "not among the classes"),
    (["data.classes=[3,3]"], "data.classes", "distinct"),
    (["data.name=ring", "model.name=mlp", "data.classes=[0]"], "data.classes", "labelled image data"),
]


@pytest.mark.parametrize("overrides,key,hint", BAD_CONFIGS, ids=[b[1] + ":" + b[0][-1] for b in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_key_exit_2(overrides, key, hint, capsys, tmp_path):
    code = cli.main(["train", str(JOBS / "quickstart.yaml"), *overrides, f"storage.uri={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"config: {key}:" in err and hint in err, err
    assert not any(tmp_path.iterdir()), "a rejected config must not create a run"


def test_missing_job_file_exit_2_from_a_real_process(tmp_path):
    proc = run_cli("train", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
BAD_STORAGE = [
    (["storage.uri=s3://ab/runs"], "storage.uri", "bucket name 'ab' is not valid"),
    (["storage.uri=gs://bucket/runs"], "storage.uri", "use a local path or s3://bucket/prefix"),
    ([f"storage.uri=s3://AKIAEXAMPLE:{SECRET}@bucket/runs"], "storage.uri", "credentials do not belong in the URI"),
    (["storage.uri=s3://bucket/runs", "storage.endpoint_url=127.0.0.1:9000"], "storage.endpoint_url", "http(s)://host"),
    (["storage.uri=s3://bucket/runs", f"storage.endpoint_url=http://minio:{SECRET}@127.0.0.1:9000"], "storage.endpoint_url", "AWS chain"),
    (["storage.endpoint_url=http://127.0.0.1:9000"], "storage.endpoint_url", "only applies to s3://"),
    (["storage.uri=s3://bucket/runs", "storage.retry_mode=legacy"], "storage.retry_mode", "choose one of standard, adaptive"),
    (["storage.uri=s3://bucket/runs", "storage.max_attempts=0"], "storage.max_attempts", "must be > 0"),
    ([f"storage.aws_secret_access_key={SECRET}"], "storage.aws_secret_access_key", "credentials do not belong in a job config"),
]


@pytest.mark.parametrize("overrides,key,hint", BAD_STORAGE, ids=[b[1] + ":" + b[0][-1].split("=")[1][:24] for b in BAD_STORAGE])
def test_bad_storage_config_is_one_line_and_never_echoes_a_secret(overrides, key, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", str(JOBS / "ring.yaml"), *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"config: {key}:" in err and hint in err, err
    assert SECRET not in err
    assert not any(tmp_path.iterdir()), "a rejected config must not create a run"


def test_a_job_file_carrying_a_secret_key_is_refused_without_echoing_it(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text((JOBS / "ring.yaml").read_text() + f"storage: {{uri: s3://bucket/runs, secret_key: {SECRET}}}\n")
    code = cli.main(["train", str(job)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "config: storage.secret_key: credentials do not belong in a job config" in err and "AWS_PROFILE" in err
    assert SECRET not in err


def test_r1_gamma_auto_is_the_references_rule_and_dry_run_shows_the_resolved_job_starting_nothing(tmp_path):
    """`loss.r1_gamma: auto` is StyleGAN2-ADA's 0.0002 * res^2 / batch (0.0128 for the 64 px job at
    batch 64; the job used to hard-code 0.05); `--dry-run` prints it and writes nothing."""
    from tests.conftest import cli_here

    assert load_job(JOBS / "stylegan2_images_64.yaml").loss.r1_gamma == pytest.approx(0.0128)
    assert load_job(JOBS / "stylegan2_digits.yaml", ["loss.r1_gamma=auto", "train.batch_size=32"]).loss.r1_gamma \
        == pytest.approx(0.0002 * 32 ** 2 / 32)
    assert load_job(JOBS / "ring.yaml").loss.r1_gamma == 1.0  # a number stays as given
    assert load_job(JOBS / "quickstart.yaml", ["loss.r1_gamma=2", "train.augment_p=1"]).train.augment_p == 1.0  # ints too
    proc = cli_here("train", str(JOBS / "stylegan2_digits.yaml"), "loss.r1_gamma=auto", f"storage.uri={tmp_path}/runs",
                    "--dry-run", check=True)
    shown = config.load(text=proc.stdout)  # the printed job is itself a job ganflow takes
    assert shown.loss.r1_gamma == pytest.approx(0.0002 * 32 ** 2 / shown.train.batch_size)
    assert shown.loss.d_reg_every == 16 and not (tmp_path / "runs").exists()
    bad = cli_here("train", str(JOBS / "ring.yaml"), "loss.r1_gamma=often")
    assert bad.returncode == 2 and "loss.r1_gamma: must be a number >= 0 or 'auto'" in bad.stderr
