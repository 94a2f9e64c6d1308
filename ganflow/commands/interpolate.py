"""`ganflow interpolate`: a PNG grid of spherical latent interpolations (a row per class for
conditional models, each along the same latent path)."""

from __future__ import annotations

from pathlib import Path

from ganflow.commands.common import RUN_ERRORS, die, load_generator
from ganflow.core.sampling import SampleError, interpolation_grid
from ganflow.present.pictures import grid_png
from ganflow.store.atomic import write_atomic


def interpolate_to_file(run: str | Path, out: Path, rows: int = 8, steps: int = 10, seed: int = 0) -> Path:
    if out.suffix.lower() != ".png":
        raise SampleError(f"--out: {out} must end in .png")
    images = interpolation_grid(load_generator(run).G, rows, steps, seed)
    write_atomic(out, grid_png(images, nrow=steps))
    return out


def main(args) -> int:
    try:
        path = interpolate_to_file(args.run, Path(args.out), rows=args.rows, steps=args.steps, seed=args.seed)
    except RUN_ERRORS as err:
        return die(str(err))
    print(path)
    return 0
