"""TorchScript archives are read as data: a `__setstate__` in the file is not run, a foreign global
in its pickle is refused, and the FID loader turns either into one line (issue 30, fault 9)."""

import pickle
import zipfile
from typing import Tuple

import pytest
import torch

from ganflow.metrics.inception import InceptionWeightsError, load_inception
from ganflow.store.torchscript import ScriptRefused, read_torchscript


class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.register_buffer("mean", torch.arange(4.0))

    def forward(self, x):
        return self.conv(x) + self.mean[:, None, None]


class Hooked(torch.nn.Module):
    """torch.jit.load runs this `__setstate__`: the loaded buffer is 7s, not the saved 1s."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.ones(3))

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]):
        self.w = state[0] * 0 + 7
        self.training = state[1]

    def forward(self, x):
        return x * self.w


def test_a_torchscripts_tensors_are_read_as_jit_load_reads_them(tmp_path):
    torch.jit.script(Plain()).save(str(tmp_path / "plain.pt"))
    ours = read_torchscript(tmp_path / "plain.pt").tensors()
    theirs = torch.jit.load(str(tmp_path / "plain.pt")).state_dict()
    assert sorted(ours) == sorted(theirs) == ["conv.bias", "conv.weight", "mean"]
    for name in theirs:
        assert torch.equal(ours[name], theirs[name])


def test_a_torchscript_whose_setstate_would_run_is_refused_without_running_it(tmp_path):
    path = tmp_path / "hooked.pt"
    torch.jit.script(Hooked()).save(str(path))
    assert torch.equal(torch.jit.load(str(path)).w, torch.full((3,), 7.0))  # what loading it the usual way runs
    with pytest.raises(ScriptRefused, match="not a dict"):
        read_torchscript(path)
    with pytest.raises(InceptionWeightsError, match="hooked.pt: a module record"):
        load_inception(str(path))


class Boom:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_foreign_global_in_a_torchscripts_data_is_refused_before_it_is_called(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.jit.script(Plain()).save(str(path))
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = next(n for n in members if n.endswith("/data.pkl"))
    members[data] = pickle.dumps(Boom(), protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    with pytest.raises(ScriptRefused, match="print is not part of a TorchScript"):
        read_torchscript(path)
    assert "ran" not in capsys.readouterr().out
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InceptionWeightsError, match="not a readable weights file"):
        load_inception(str(truncated))
