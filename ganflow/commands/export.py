"""`ganflow export`: the generator of a run as one standalone file another system can load without
ganflow (TorchScript, or ONNX), plus a JSON sidecar saying how to call it. The file is written
only after the exported model has produced the PyTorch generator's outputs on the same latents.

Calling convention of the exported model: `G(z)` or, for class-conditional models, `G(z, y)`;
z float32 (N, nz), y int64 (N,); output float32 (N, C, H, W) in [-1, 1] (or (N, 2) points).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Dict

import torch
from torch import nn

from ganflow.commands.common import RUN_ERRORS, die, load_generator
from ganflow.store.atomic import copy_atomic, write_atomic

CHECK_BATCH = 16


class ExportError(ValueError):
    pass


class _Standalone(nn.Module):
    """G with its output clamped to [-1, 1] as `ganflow sample` gives it, and a fixed signature."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.G(z, y)
        return out.clamp(-1, 1) if out.dim() == 4 else out


def _example(G: nn.Module, n: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.nz, generator=g)
    return (z, torch.randint(G.num_classes, (n,), generator=g)) if G.num_classes else (z,)


def _torchscript(model: nn.Module, example: tuple, path: Path) -> Callable:
    traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda *args: loaded(*args)


def _onnx(model: nn.Module, example: tuple, path: Path) -> Callable:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("--format onnx: needs onnxruntime to check the exported model (pip install onnxruntime)") from None
    names = ["z", "y"][: len(example)]
    torch.onnx.export(model, example, str(path), input_names=names, output_names=["x"], dynamo=False,
                      dynamic_axes={**{n: {0: "batch"} for n in names}, "x": {0: "batch"}}, opset_version=17)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda *args: torch.from_numpy(session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0])


def _pt2(model: nn.Module, example: tuple, path: Path) -> Callable:
    """torch.export's program (PyTorch's current path; TorchScript is deprecated), any batch size."""
    from torch.export import Dim, export, load, save

    batch = Dim("batch", min=1, max=1 << 16)
    save(export(model, example, dynamic_shapes=tuple({0: batch} for _ in example)), str(path))
    loaded = load(str(path)).module()  # the file just written, nothing else
    return lambda *args: loaded(*args)


FORMATS: Dict[str, Callable[[nn.Module, tuple, Path], Callable]] = {"pt2": _pt2, "torchscript": _torchscript, "onnx": _onnx}


def export_generator(run: str, fmt: str, out: Path, atol: float = 1e-4) -> dict:
    """Export, reload, compare on fresh latents (a batch size other than the traced one), then
    put the file and its sidecar `out.json` in place. Returns the sidecar."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: {fmt!r}; choose one of {', '.join(FORMATS)}")
    loaded = load_generator(run)
    model = _Standalone(loaded.G.float().cpu()).eval().requires_grad_(False)  # an inference model for its users
    with tempfile.TemporaryDirectory(prefix="ganflow-export-") as tmp:
        staged = Path(tmp) / out.name
        with torch.no_grad():
            exported = FORMATS[fmt](model, _example(loaded.G, 4, seed=1), staged)
            check = _example(loaded.G, CHECK_BATCH, seed=2)
            expected, got = model(*check), exported(*check)
        if got.shape != expected.shape:
            raise ExportError(f"export: the {fmt} model gives shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}")
        err = float((got - expected).abs().max())
        if not err <= atol:
            raise ExportError(f"export: the {fmt} model differs from the PyTorch generator by {err:.3g} (> {atol:g}); "
                              "nothing was written")
        meta = loaded.meta
        sidecar = {
            "format": fmt, "inputs": ["z", "y"] if loaded.G.num_classes else ["z"], "nz": loaded.G.nz,
            "num_classes": loaded.G.num_classes, "sample_shape": list(meta.sample_shape),
            "output_range": [-1.0, 1.0] if meta.is_image else None,
            "weights": loaded.component, "run": str(run), "checkpoint": loaded.location,
            "step": loaded.step, "max_abs_diff": err, "checked_on": CHECK_BATCH,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        copy_atomic(staged, out)
    write_atomic(out.with_name(out.name + ".json"), json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def main(args) -> int:
    import sys

    try:
        sidecar = export_generator(args.run, args.format, Path(args.out), atol=args.atol)
    except (*RUN_ERRORS, ExportError) as err:
        return die(str(err))
    print(f"{args.format}: max |exported - pytorch| = {sidecar['max_abs_diff']:.2g} on {sidecar['checked_on']} latents; "
          f"calling convention in {args.out}.json", file=sys.stderr)
    print(args.out)
    return 0
