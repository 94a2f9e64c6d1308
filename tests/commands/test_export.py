"""`ganflow export` and `ganflow interpolate` on checkpoints made here (a few real GAN steps, no
Ray): the exported generator loads without ganflow and gives the PyTorch generator's outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ganflow.core.sampling import interpolation_grid, slerp
from ganflow.commands.common import load_generator
from tests.conftest import cli_here, trained_checkpoint, run_cli


@pytest.fixture(scope="module")
def cdcgan(tmp_path_factory):
    return trained_checkpoint(tmp_path_factory.mktemp("ck"), "cdcgan_digits.yaml")


# What another system does with the file: plain torch / onnxruntime, ganflow unimportable.
STANDALONE = {
    "pt2": "import torch; G = torch.export.load(sys.argv[1]).module(); out = G(*args).numpy()",
    "torchscript": "import torch; G = torch.jit.load(sys.argv[1]); out = G(*args).numpy()",
    "onnx": "import onnxruntime as ort; s = ort.InferenceSession(sys.argv[1]); "
            "out = s.run(None, {n: a.numpy() for n, a in zip(meta['inputs'], args)})[0]",
}


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "onnx"])
def test_an_exported_generator_loads_without_ganflow_and_matches_pytorch(cdcgan, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime did not install here")
    out = tmp_path / f"G.{fmt}"
    proc = run_cli("export", str(cdcgan), "--format", fmt, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["inputs"] == ["z", "y"] and meta["nz"] == 64 and meta["num_classes"] == 10 and meta["weights"] == "G_ema"
    assert meta["max_abs_diff"] <= 1e-4

    g = torch.Generator().manual_seed(5)
    z, y = torch.randn(7, 64, generator=g), torch.arange(7)  # a batch size the export never saw
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    script = ("import sys, json, numpy as np; sys.modules['ganflow'] = None; import torch; "
              "meta = json.load(open(sys.argv[1] + '.json')); "
              f"args = [torch.from_numpy(np.load('{tmp_path}/z.npy')), torch.from_numpy(np.load('{tmp_path}/y.npy'))]; "
              f"{STANDALONE[fmt]}; np.save('{tmp_path}/out.npy', out)")
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = load_generator(cdcgan).G(z, y).clamp(-1, 1).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-4)


def test_export_refuses_bad_input_with_one_line_and_writes_nothing(cdcgan, tmp_path):
    proc = cli_here("export", str(tmp_path / "nowhere"), "--format", "torchscript", "--out", str(tmp_path / "G.pt"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "G.pt").exists() and not (tmp_path / "G.pt.json").exists()


def test_slerp_keeps_the_ends_and_the_norm_of_equal_norm_latents():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    t = torch.linspace(0, 1, 5).view(1, 5, 1)
    path = slerp(a[:, None], b[:, None], t)
    assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(path[:, -1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=-1), a.norm(dim=-1, keepdim=True).expand(3, 5), atol=1e-4)  # a lerp dips


def test_interpolate_draws_a_row_per_class_along_one_latent_path(cdcgan, tmp_path):
    G = load_generator(cdcgan).G
    images = interpolation_grid(G, rows=3, steps=6, seed=1)
    assert images.shape == (10 * 6, 1, 32, 32)  # conditional: a row per class, --rows ignored
    assert not torch.equal(images[0:6], images[6:12])  # the class changes what the same latents draw
    again = interpolation_grid(G, rows=3, steps=6, seed=1)
    assert torch.equal(images, again)

    out = tmp_path / "grid.png"
    proc = cli_here("interpolate", str(cdcgan), "--steps", "6", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(out).size == (6 * 34 + 2, 10 * 34 + 2)


def test_interpolate_on_a_2d_model_says_what_to_use_instead(tmp_path):
    ring = trained_checkpoint(tmp_path, "ring.yaml", steps=1)
    proc = cli_here("interpolate", str(ring), "--out", str(tmp_path / "g.png"))
    assert proc.returncode == 2 and "2D points" in proc.stderr and not (tmp_path / "g.png").exists()
