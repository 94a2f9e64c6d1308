"""`ganflow import PKL`: StyleGAN2-ADA network pickles read as data. The pickles are written here in
that format (torch_utils.persistence records around each module's state; no reference code): the
golden fixture's reference weights, so an imported G must draw the reference's images; and hostile
pickles, which must be refused in one line with nothing of theirs run."""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganflow.run.generator import load_generator
from tests.conftest import cli_here

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "stylegan2.safetensors"
G_KWARGS = dict(z_dim=32, c_dim=3, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=1024, channel_max=32, num_fp16_res=0, conv_clamp=256))
D_KWARGS = dict(c_dim=3, img_resolution=16, img_channels=3, channel_base=1024, channel_max=32, num_fp16_res=0,
                conv_clamp=256, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4))
BUFFERS = ("noise_const", "resample_filter", "w_avg")


class _EasyDict(dict):
    pass


def _reconstruct_persistent_obj(meta):  # the name the format refers to; never called when reading
    raise AssertionError("a reader ran the record's reconstructor")


class _Record:
    """Pickles as StyleGAN2-ADA's persistent classes do: (_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        return _reconstruct_persistent_obj, (dict(type="class", version=4, module_src="raise SystemExit('ran')",
                                                   class_name=self.class_name, state=self.state),)


@contextlib.contextmanager
def _format_modules():
    """The module names the format's globals live under, for pickling only."""
    persistence, util = types.ModuleType("torch_utils.persistence"), types.ModuleType("dnnlib.util")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = _EasyDict
    saved = (_reconstruct_persistent_obj.__module__, _EasyDict.__module__)
    _reconstruct_persistent_obj.__module__, _EasyDict.__module__ = "torch_utils.persistence", "dnnlib.util"
    _EasyDict.__qualname__ = "EasyDict"
    parents = {"torch_utils": types.ModuleType("torch_utils"), "dnnlib": types.ModuleType("dnnlib")}
    parents["torch_utils"].persistence, parents["dnnlib"].util = persistence, util
    sys.modules.update({**parents, "torch_utils.persistence": persistence, "dnnlib.util": util})
    try:
        yield
    finally:
        _reconstruct_persistent_obj.__module__, _EasyDict.__module__ = saved
        _EasyDict.__qualname__ = "_EasyDict"
        for name in ("torch_utils", "dnnlib", "torch_utils.persistence", "dnnlib.util"):
            sys.modules.pop(name)


def _tree(class_name: str, flat: dict, kwargs: dict | None = None) -> _Record:
    children: dict = collections.defaultdict(dict)
    params, buffers = collections.OrderedDict(), collections.OrderedDict()
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            children[head][rest] = value
        elif head in BUFFERS:
            buffers[head] = value
        else:
            params[head] = torch.nn.Parameter(value, requires_grad=False)
    state = {"training": False, "_parameters": params, "_buffers": buffers, "_non_persistent_buffers_set": set(),
             "_modules": collections.OrderedDict((k, _tree("Layer", v)) for k, v in children.items()),
             "weight_gain": np.float32(0.5)}
    if kwargs is not None:
        state["_init_kwargs"] = _EasyDict(kwargs)
    return _Record(class_name, state)


def write_snapshot(path: Path, golden: dict) -> Path:
    G = {k[2:]: v for k, v in golden.items() if k.startswith("G.")}
    D = {k[2:]: v for k, v in golden.items() if k.startswith("D.")}
    with _format_modules():
        path.write_bytes(pickle.dumps({"G": _tree("Generator", G, G_KWARGS), "D": _tree("Discriminator", D, D_KWARGS),
                                       "G_ema": _tree("Generator", G, G_KWARGS), "augment_pipe": None,
                                       "training_set_kwargs": _EasyDict(resolution=16)}))
    return path


def test_an_imported_snapshot_draws_the_reference_generators_images_and_is_a_run_the_verbs_take(tmp_path):
    golden = load_file(str(GOLDEN))
    pkl = write_snapshot(tmp_path / "network-snapshot.pkl", golden)
    proc = cli_here("import", str(pkl), "--out", str(tmp_path / "runs" / "ffhq"), check=True)
    run = Path(proc.stdout.strip())
    loaded = load_generator(run)
    assert loaded.step == 0 and loaded.config.model.channel_base == 1024 and loaded.meta.num_classes == 3
    with torch.no_grad():
        images = loaded.G(golden["in.z"], golden["in.y"])  # the constant noise, as the fixture's
    torch.testing.assert_close(images, golden["out.images"], rtol=1e-5, atol=1e-5 * golden["out.images"].abs().max().item())
    sample = cli_here("sample", str(run), "--num", "4", "--out", str(tmp_path / "s.npz"), check=True)
    assert np.load(sample.stdout.strip())["images"].shape == (4, 3, 16, 16)
    resumable = cli_here("train", "--resume", str(run), f"data.path={tmp_path}", "--dry-run", check=True)
    assert "channel_base: 1024" in resumable.stdout
    again = cli_here("import", str(pkl), "--out", str(run))
    assert again.returncode == 2 and "exists" in again.stderr


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_pickle_is_refused_in_one_line_with_nothing_of_it_run_and_nothing_written(tmp_path):
    marker = tmp_path / "pwned"
    cases = {
        "system.pkl": pickle.dumps({"G_ema": _Hostile(marker)}),
        "eval.pkl": pickle.dumps({"G": (eval, ("__import__('os').system('touch " + str(marker) + "')",))}),
        "not-a-pickle.pkl": b"PK\x03\x04 a zip, not a network pickle",
        "no-networks.pkl": pickle.dumps({"G": [1, 2, 3]}),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        proc = cli_here("import", str(tmp_path / name), "--out", str(tmp_path / "run"))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (name, proc.stderr)
        assert "PKL:" in proc.stderr and not marker.exists() and not (tmp_path / "run").exists(), (name, proc.stderr)
    proc = cli_here("import", str(tmp_path / "system.pkl"), "--out", str(tmp_path / "run"))
    assert "posix.system is not part of a network pickle; refused" in proc.stderr or "os.system" in proc.stderr


def test_train_init_from_starts_a_new_run_from_a_runs_or_a_pickles_networks_at_step_0(tmp_path):
    """`train.init_from` (transfer learning): G, D and G_ema from a ganflow checkpoint or a network
    pickle, fresh optimizers, step 0; a source that does not fit the job's model is one error."""
    from ganflow.config import ConfigError
    from ganflow.job import build_training, load_job
    from ganflow.run import checkpoint as ckpt
    from tests.conftest import JOBS, trained_checkpoint

    small = ("model.ngf=2", "model.ndf=2", "data.resolution=16")
    source = trained_checkpoint(tmp_path, "stylegan2_digits.yaml", 2, small)
    saved, _ = ckpt.load_checkpoint(source)
    cfg = load_job(JOBS / "stylegan2_digits.yaml", [*small, "train.batch_size=32", f"train.init_from={source}"])
    _, st = build_training(cfg, torch.device("cpu"))
    assert st.step == 0 and not st.opt_g.state  # fresh optimizers
    for name in ("G", "D", "G_ema"):
        assert all(torch.equal(v, saved[name][k]) for k, v in getattr(st, name).state_dict().items()), name
    with pytest.raises(ConfigError, match="train.init_from: .* does not fit this job's model"):
        build_training(load_job(JOBS / "stylegan2_digits.yaml", ["model.ngf=4", "model.ndf=2", "data.resolution=16",
                                                                 f"train.init_from={source}"]), torch.device("cpu"))

    golden = load_file(str(GOLDEN))
    pkl = write_snapshot(tmp_path / "snapshot.pkl", golden)
    images = tmp_path / "images"
    for k, name in enumerate("abc"):
        (images / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (80 * k, 0, 0)).save(images / name / "0.png")
    overrides = ["model.name=stylegan2", "model.nz=32", "model.ngf=4", "model.ndf=4", "model.channel_base=1024",
                 "model.mapping_layers=2", "model.fp16_res=0", "data.name=images", f"data.path={images}",
                 "data.resolution=16", "data.channels=3", "train.batch_size=4", f"train.init_from={pkl}"]
    _, st = build_training(load_job(None, overrides), torch.device("cpu"))
    with torch.no_grad():
        close = st.G_ema.eval()(golden["in.z"], golden["in.y"])
    torch.testing.assert_close(close, golden["out.images"], rtol=1e-5, atol=1e-5 * golden["out.images"].abs().max().item())
    for bad, says in ((tmp_path / "nope", "no such run or checkpoint"), (tmp_path / "h.pkl", "refused")):
        if bad.suffix == ".pkl":
            bad.write_bytes(pickle.dumps({"G": _Hostile(tmp_path / "pwned")}))
        proc = cli_here("train", str(JOBS / "ring.yaml"), f"train.init_from={bad}", f"storage.uri={tmp_path}/runs")
        assert proc.returncode == 2 and f"train.init_from: {bad}" in proc.stderr and says in proc.stderr, proc.stderr
        assert not (tmp_path / "runs").exists() and not (tmp_path / "pwned").exists()
