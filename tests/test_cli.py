"""What a new user types (issue 18): flags and overrides in any order, a broken YAML file, a data
folder that is not there; each bad input one `ganflow: error:` line, exit 2, before Ray starts."""

from __future__ import annotations

import pytest

from ganflow import cli
from tests.conftest import JOBS, cli_here


@pytest.mark.parametrize("argv", [
    ["train", "jobs/ring.yaml", "--address", "http://127.0.0.1:8265", "train.steps=5", "model.nz=8"],
    ["train", "jobs/ring.yaml", "train.steps=5", "--address", "http://127.0.0.1:8265", "model.nz=8"],
    ["train", "--address", "http://127.0.0.1:8265", "jobs/ring.yaml", "train.steps=5", "model.nz=8"],
])
def test_flags_and_overrides_come_in_any_order(argv):
    args = cli.parse(argv)
    assert args.job == "jobs/ring.yaml" and args.address == "http://127.0.0.1:8265"
    assert args.overrides == ["train.steps=5", "model.nz=8"]


def test_sweep_and_submit_take_overrides_after_their_flags_too():
    assert cli.parse(["sweep", "s.yaml", "--address", "a:6379", "train.steps=5"]).overrides == ["train.steps=5"]
    assert cli.parse(["submit", "j.yaml", "--address", "http://h:8265", "train.steps=5"]).overrides == ["train.steps=5"]


def test_an_unknown_flag_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse(["train", "jobs/ring.yaml", "--adress", "x", "train.steps=5"])
    assert exit_.value.code == 2 and "unrecognized arguments: --adress" in capsys.readouterr().err


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: x\ntrain:\n  steps: 5\n   batch_size: 8\n")
    proc = cli_here("train", str(job))
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr.strip().splitlines() == [
        f"ganflow: error: config: job: {job} is not valid YAML (line 4, column 14: mapping values are not allowed in this context)"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_an_image_folder_that_is_missing_or_empty_fails_before_ray_starts_and_writes_nothing(tmp_path, make):
    folder = tmp_path / "images"
    if make == "empty":
        (folder / "cats").mkdir(parents=True)
        (folder / "cats" / "notes.txt").write_text("no images here")
    runs = tmp_path / "runs"
    proc = cli_here("train", str(JOBS / "quickstart.yaml"), "data.name=images", f"data.path={folder}", f"storage.uri={runs}",
                    env={"RAY_ADDRESS": None})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganflow: error: config: data.path: ") and str(folder) in lines[0]
    assert "Traceback" not in proc.stderr and not runs.exists()


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "BAD"], ["train", "jobs/ring.yaml", "train.stepz=1"]])
def test_help_and_a_bad_job_file_answer_without_importing_torch_ray_or_wandb(tmp_path, argv):
    """What a user types first answers in a fraction of a second: no torch, Ray or W&B imported (1.5 s)."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntrain:\n  steps: [1\n")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    code = ("import sys\nfrom ganflow import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'wandb', 'boto3') if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                          cwd=JOBS.parent)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
    if argv[0] == "train" and argv[-1] != "--help":
        assert proc.stderr.startswith("ganflow: error: config: ")


def test_the_version_is_the_installed_packages_and_python_dash_m_ganflow_is_the_command(tmp_path):
    """Issue 31's conventions: `ganflow --version`, `ganflow.__version__` from the package metadata,
    `python -m ganflow`; a location that does not exist is an error, not an empty list."""
    import subprocess
    import sys
    from importlib.metadata import version

    import ganflow

    assert ganflow.__version__ == version("ganflow")
    proc = subprocess.run([sys.executable, "-m", "ganflow", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ganflow {version('ganflow')}"
    missing = cli_here("runs", "list", str(tmp_path / "typo"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"ganflow: error: {tmp_path / 'typo'}: no such directory; give a storage.uri " \
                                     "(a directory or s3://bucket/prefix)"
    assert cli_here("runs", "list", str(tmp_path)).returncode == 0  # there, and empty
    completion = subprocess.run([sys.executable, "-m", "ganflow", "--print-completion", "bash"], capture_output=True,
                                text=True, timeout=60)
    assert completion.returncode == 0 and "complete" in completion.stdout
    assert all(verb in completion.stdout for verb in ("train", "sample", "serve", "runs"))


def test_minus_q_and_minus_v_set_how_much_ganflow_says_wherever_they_stand(tmp_path):
    """Issue 31: one logging handler; the library logs, the CLI shows `[ganflow]` lines by level."""
    import numpy as np
    from PIL import Image

    source = tmp_path / "images"
    source.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(source / f"{i}.png")
    (source / "broken.png").write_bytes(b"not an image")

    def prepare(*flags, out):
        return cli_here(*flags[:1], "data", "prepare", str(source), "--out", str(tmp_path / out), "--resolution", "8",
                        "--reference", "none", *flags[1:]).stderr.strip().splitlines()

    said = prepare(out="a")
    assert "[ganflow] warning: skipped broken.png: not a readable PNG/JPEG" in said
    assert any(line.startswith("[ganflow] 3 images (0 classes, 1 skipped)") for line in said)
    assert prepare("-q", out="b") == ["[ganflow] warning: skipped broken.png: not a readable PNG/JPEG"]
    assert prepare("-qq", out="c") == []
    assert prepare("--quiet", "-q", out="d") == []  # after the verb too
