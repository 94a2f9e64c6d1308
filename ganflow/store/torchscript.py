"""A TorchScript archive's tensors read as data. `torch.jit.load` compiles the archive's code and
runs its `__setstate__` methods; here the archive's `data.pkl` is read by an Unpickler that
resolves only the globals of module records and tensors, each to a function of ours that builds
data, so the code inside the file is never compiled (NVIDIA's FID Inception ships as one)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch


class ScriptRefused(ValueError):
    pass


class ScriptRecord:
    """One TorchScript module's attributes (submodules, parameters, buffers), nothing executed."""

    def __init__(self, class_name: str):
        self.class_name, self.attrs = class_name, {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise ScriptRefused("a module record whose state is not a dict")
        self.attrs = dict(state)

    def tensors(self, prefix: str = "") -> Dict[str, torch.Tensor]:
        """Every tensor under its attribute path, in the archive's order (a module's own tensors first)."""
        out: Dict[str, torch.Tensor] = {}
        for name, value in self.attrs.items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
            elif isinstance(value, ScriptRecord):
                out.update(value.tensors(f"{prefix}{name}."))
        return out


def _record_class(class_name: str):
    def new(cls=None, *args):  # NEWOBJ calls cls.__new__(cls); a plain call works too
        return ScriptRecord(class_name)

    return type("Record", (), {"__new__": staticmethod(new)})


_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
           "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
           "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
           "BoolStorage": torch.bool}


def _tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise ScriptRefused("a tensor whose storage is not raw data")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("collections", "OrderedDict"): dict,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _record_class(f"{module}.{name}")
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        found = _ALLOWED.get((module, name))
        if found is None:
            raise ScriptRefused(f"{module}.{name} is not part of a TorchScript's data; refused (nothing in the file was run)")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and str(pid[2]).isdigit()):
            raise ScriptRefused(f"an unexpected persistent id {str(pid)[:60]!r}")
        raw = self.archive.read(f"{self.root}/data/{pid[2]}")
        count = int(pid[4])
        if len(raw) < count * pid[1].itemsize:
            raise ScriptRefused(f"storage {pid[2]} holds {len(raw)} bytes, fewer than {count} elements")
        return torch.frombuffer(bytearray(raw[: count * pid[1].itemsize]), dtype=pid[1]) if count else torch.empty(0, dtype=pid[1])


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding compiled code (torch.save's zips hold none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def read_torchscript(path: Path) -> ScriptRecord:
    """The archive's top module record, its tensors read and its code left unread."""
    try:
        with zipfile.ZipFile(path) as z:
            data: Optional[str] = next((n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1), None)
            if data is None:
                raise ScriptRefused("no data.pkl in it (not a TorchScript archive)")
            top: Any = _Unpickler(z.read(data), z, data.split("/")[0]).load()
    except ScriptRefused:
        raise
    except Exception as err:  # a truncated zip or pickle: what the reader says, in one line
        raise ScriptRefused(f"not a readable TorchScript archive ({type(err).__name__}: {err})") from None
    if not isinstance(top, ScriptRecord):
        raise ScriptRefused("its data is not a module")
    return top
