"""A trained generator behind HTTP with Ray Serve (`ganflow serve RUN`):

    GET /sample?n=16&label=3&seed=7&truncation=0.7&format=png|npz   a grid (or scatter) PNG, or the npz of `ganflow sample`
    GET /health                                                     the checkpoint served, its step, the model

Samples are those `ganflow sample` gives for the same seed and label. Concurrent requests are
batched (`serve.batch`) into one forward pass for generators without noise inputs (StyleGAN2's
are drawn per request, as `sample` does). With `reload_s`, each replica looks for a newer
checkpoint of the run that often and swaps it in between requests."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

MAX_N = 256  # samples in one request


class BadRequest(ValueError):
    pass


def parse_query(query: Dict[str, str], num_classes: int, styles: bool) -> Tuple[int, Optional[int], int, Optional[float], str]:
    """(n, label, seed, truncation, format) of a /sample query, or BadRequest naming the parameter."""
    unknown = sorted(set(query) - {"n", "label", "seed", "truncation", "format"})
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a parameter of /sample (n, label, seed, truncation, format)")

    def integer(name: str, default: Optional[int]) -> Optional[int]:
        if name not in query:
            return default
        try:
            return int(query[name])
        except ValueError:
            raise BadRequest(f"{name}: an integer, got {query[name]!r}") from None

    n, label, seed = integer("n", 16), integer("label", None), integer("seed", 0)
    if not 1 <= n <= MAX_N:
        raise BadRequest(f"n: must be in [1, {MAX_N}], got {n}")
    if label is not None and not 0 <= label < num_classes:
        raise BadRequest("label: this model takes none" if not num_classes else f"label: must be in [0, {num_classes - 1}], got {label}")
    if not 0 <= seed < 2**63:
        raise BadRequest(f"seed: must be in [0, 2**63), got {seed}")
    truncation = None
    if "truncation" in query:
        try:
            truncation = float(query["truncation"])
        except ValueError:
            raise BadRequest(f"truncation: a number, got {query['truncation']!r}") from None
        if not styles:
            raise BadRequest("truncation: this model has no style space to truncate")
        if not 0 <= truncation <= 1:
            raise BadRequest(f"truncation: must be in [0, 1], got {truncation}")
    fmt = query.get("format", "png")
    if fmt not in ("png", "npz"):
        raise BadRequest(f"format: png or npz, got {fmt!r}")
    return n, label, seed, truncation, fmt


def encode(x: torch.Tensor, y: Optional[torch.Tensor], fmt: str, centers=None) -> Tuple[bytes, str]:
    from ganflow.present.pictures import grid_png, scatter_png

    if fmt == "png":
        return (scatter_png(x, centers) if x.dim() == 2 else grid_png(x)), "image/png"
    arrays = {"samples" if x.dim() == 2 else "images": x.numpy().astype(np.float32)}
    if y is not None:
        arrays["labels"] = y.numpy().astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), "application/octet-stream"


def deployment(location: str, replicas: Optional[int] = 1, autoscale: Optional[Tuple[int, int]] = None,
               gpus: float = 0.0, cpus: float = 1.0, max_batch: int = 16, reload_s: Optional[float] = None):
    """The Serve application for the generator at `location` (a run or checkpoint, local or s3://;
    a wandb: name is resolved by the caller)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    options: Dict[str, Any] = {"ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
                               "max_ongoing_requests": max(5, 2 * max_batch)}  # room to fill a batch
    if autoscale:
        options["autoscaling_config"] = {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                         "target_ongoing_requests": 2}
    else:
        options["num_replicas"] = replicas

    @serve.deployment(name="ganflow-generator", **options)
    class GeneratorServer:
        def __init__(self) -> None:
            self.device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
            self._load()
            self.checked = time.monotonic()

        def _load(self) -> None:
            from ganflow import models
            from ganflow.run.generator import load_generator

            self.g = load_generator(location)
            self.G = self.g.G.to(self.device)
            self.styles = models.spec(self.g.config.model.name).styles
            self.noise = getattr(self.G, "random_inputs", False)
            self.centers = torch.tensor(self.g.meta.centers) if self.g.meta.centers else None
            shape = self.g.meta.sample_shape
            self.resolution = int(shape[-1]) if len(shape) == 3 else None

        def _maybe_reload(self) -> None:
            if reload_s and time.monotonic() - self.checked >= reload_s:
                self.checked = time.monotonic()
                before = self.g.location
                try:
                    self._load()
                except Exception as err:  # noqa: BLE001 - keep serving what was loaded
                    print(f"[ganflow] serve: reload failed, still serving {before}: {err}")

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=0.005)
        async def _generate(self, asks: List[Tuple[int, Optional[int], int, Optional[float]]]) -> List[tuple]:
            return await asyncio.get_running_loop().run_in_executor(None, self._forward, asks)

        @torch.no_grad()
        def _forward(self, asks: List[Tuple[int, Optional[int], int, Optional[float]]]) -> List[tuple]:
            from ganflow.core.sampling import draw_latents, generate

            G = self.G
            results: List[Optional[tuple]] = [None] * len(asks)
            shared = [i for i, a in enumerate(asks) if a[3] is None] if not self.noise else []
            if len(shared) > 1:  # one forward pass for the requests that can share one
                drawn = [draw_latents(G, asks[i][0], asks[i][2], asks[i][1]) for i in shared]
                z = torch.cat([d[0] for d in drawn]).to(self.device)
                y = torch.cat([d[1] for d in drawn]).to(self.device) if drawn[0][1] is not None else None
                x = G(z, y).float().cpu()
                x = x.clamp(-1, 1) if x.dim() == 4 else x
                start = 0
                for i, (_, labels) in zip(shared, drawn):
                    results[i] = (x[start:start + asks[i][0]], labels)
                    start += asks[i][0]
            for i, (n, label, seed, truncation) in enumerate(asks):
                if results[i] is None:
                    results[i] = generate(G, n, seed, label, truncation=truncation)
            return results

        async def __call__(self, request: Request):
            path = request.url.path.rstrip("/")
            if path.endswith("/health"):
                g = self.g
                return JSONResponse({"status": "ok", "checkpoint": g.location, "step": g.step, "model": g.config.model.name,
                                     "num_classes": self.G.num_classes, "resolution": self.resolution, "device": self.device})
            if not path.endswith("/sample"):
                return Response("not found: GET /sample?n=16&label=3&seed=7&format=png|npz, or GET /health\n", 404)
            self._maybe_reload()
            try:
                n, label, seed, truncation, fmt = parse_query(dict(request.query_params), self.G.num_classes, self.styles)
            except BadRequest as err:
                return Response(f"{err}\n", 400, media_type="text/plain")
            x, y = await self._generate((n, label, seed, truncation))
            body, media = encode(x, y, fmt, self.centers)
            return Response(body, media_type=media, headers={"X-Ganflow-Step": str(self.g.step)})

    return GeneratorServer.bind()
