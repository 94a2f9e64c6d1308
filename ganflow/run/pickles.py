"""Network pickles of StyleGAN2-ADA (and R3GAN, StyleGAN3, which share its format) read as data.

Their networks are `torch_utils.persistence` records: the class's module source, its name and
the object's state (`_parameters`, `_buffers`, `_modules`, `_init_kwargs`). Loading them as their
authors do executes that source. Here an Unpickler resolves only the globals such a file needs,
each to a function of ours that builds data (a record, a dict, a tensor from torch's own
weights-only loader, a numpy number); the module source is never compiled and any other global
(a `__reduce__` to `os.system`, say) is refused before it is called.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch


class PickleRefused(ValueError):
    pass


class EasyDict(dict):
    """dnnlib.util.EasyDict's data: a plain dict (its attribute access is not needed)."""


@dataclass
class Persistent:
    """A persistent network record: its class name and state, nothing executed."""

    class_name: str
    state: Dict[str, Any]

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    def state_dict(self, prefix: str = "") -> Dict[str, torch.Tensor]:
        """Parameters and persistent buffers under their module paths, as `nn.Module.state_dict`."""
        out: Dict[str, torch.Tensor] = {}
        transient = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if isinstance(value, torch.Tensor) and name not in transient:
                    out[prefix + name] = value.detach()
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, Persistent):
                out.update(child.state_dict(f"{prefix}{name}."))
        return out


def _record(meta: Dict[str, Any]) -> Persistent:
    if meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise PickleRefused("a persistent record that is not a class instance's state")
    return Persistent(str(meta.get("class_name")), dict(meta["state"]))


def _storage(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)  # a zip of raw bytes: torch's safe loader


def _tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise PickleRefused("a tensor whose storage is not raw data")
    return torch.empty((0,), dtype=storage.dtype).set_(storage, offset, size, stride)


def _parameter(data, requires_grad=False, hooks=None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise PickleRefused("a parameter that is not a tensor")
    return data


def _scalar(dtype, data: Optional[bytes] = None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise PickleRefused("a numpy scalar that is not a plain number")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _dtype(name, align=False, copy=False) -> np.dtype:
    dtype = np.dtype(name)
    if dtype.hasobject:
        raise PickleRefused("a numpy object dtype")
    return dtype


ALLOWED: Dict[tuple, Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "dtype"): _dtype,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = ALLOWED.get((module, name))
        if found is None:
            raise PickleRefused(f"{module}.{name} is not part of a network pickle; refused (nothing in the file was run)")
        return found

    def persistent_load(self, pid):
        raise PickleRefused("persistent ids (a torch.save archive, not a network pickle)")


def read_network_pickle(data: bytes) -> Dict[str, Any]:
    """The pickle's top-level dict (`G`, `D`, `G_ema`: `Persistent` records; kwargs as dicts)."""
    try:
        top = _Unpickler(io.BytesIO(data)).load()
    except PickleRefused:
        raise
    except Exception as err:  # truncated or not a pickle at all: what the unpickler says
        raise PickleRefused(f"not a readable network pickle ({type(err).__name__}: {err})") from None
    if not isinstance(top, dict) or not any(isinstance(v, Persistent) for v in top.values()):
        raise PickleRefused("no networks in it (a StyleGAN2-ADA/StyleGAN3/R3GAN snapshot holds G, D and G_ema)")
    return top
