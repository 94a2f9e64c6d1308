"""`ganflow import PKL --out RUN_DIR [overrides]`: a StyleGAN2-ADA network pickle as a ganflow run.

The pickle is read as data (`ganflow.run.pickles`: nothing in it runs), its networks' shapes become
a job (`models.interop.stylegan2_overrides`, then the overrides given here), their weights are
mapped onto ganflow's modules and written as the run's step-0 checkpoint with fresh optimizers:
a run that `sample`, `eval`, `export` and `train --resume RUN data.path=...` (fine-tuning) take.
"""

from __future__ import annotations

import logging
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import List

from ganflow.commands.exits import die
from ganflow.config import ConfigError

log = logging.getLogger("ganflow.imports")


PICKLE_FIXED = ("data.resolution", "data.channels")


def _load(module, state: dict, what: str) -> None:
    from ganflow.models.interop import InteropError

    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise InteropError(f"{what}'s weights do not fit its declared shape ({str(err).splitlines()[-1].strip()})") from None


def _job(top: dict, overrides: List[str]):
    """The resolved job; checked whole once the data is named (else sampling needs none)."""
    from ganflow.config import load
    from ganflow.job import complete, resolve
    from ganflow.models.interop import stylegan2_overrides

    from ganflow.models.interop import InteropError
    from ganflow.run.pickles import Persistent

    missing = [k for k in ("G", "D", "G_ema") if not isinstance(top.get(k), Persistent)]
    if missing:
        raise InteropError(f"no {', '.join(missing)} network in it (a StyleGAN2-ADA snapshot holds G, D and G_ema)")
    g, d = top["G_ema"], top["D"]
    if g.class_name != "Generator" or d.class_name != "Discriminator":
        raise ConfigError(f"PKL: networks {g.class_name}/{d.class_name}; ganflow imports StyleGAN2-ADA's Generator/Discriminator")
    classes = int(g.init_kwargs.get("c_dim") or 0)
    fixed = [o.split("=", 1)[0] for o in overrides[1:] if o.startswith("model.") or o.split("=", 1)[0] in PICKLE_FIXED]
    if fixed:
        raise ConfigError(f"{fixed[0]}: comes from the pickle's networks and cannot be overridden")
    base = stylegan2_overrides(g.init_kwargs, d.init_kwargs) + ["data.name=images", f"name={Path(overrides[0]).stem}"]
    cfg = load(None, base + overrides[1:])
    cfg = complete(cfg) if cfg.data.path else resolve(cfg)
    return cfg, classes


def import_pickle(pkl: Path, out: Path, overrides: List[str]) -> Path:
    import torch

    from ganflow.core.state import DataMeta, TrainingState
    from ganflow.models import build_models
    from ganflow.run.checkpoint import write_checkpoint
    from ganflow.run.generator import pickle_networks
    from ganflow.run.layout import RunLayout
    from ganflow.run.pickles import read_network_pickle
    from ganflow.run.run import Run

    data = pkl.read_bytes()
    top = read_network_pickle(data)
    cfg, classes = _job(top, [str(pkl), *overrides])
    meta = DataMeta((cfg.data.channels, cfg.data.resolution, cfg.data.resolution), classes, [str(k) for k in range(classes)])
    G, D = build_models(cfg.model, meta.sample_shape, classes)
    state = TrainingState.create(cfg, G, D, torch.device("cpu"))
    for name, weights in pickle_networks(top, cfg.data.resolution).items():
        if getattr(state, name) is not None:
            _load(getattr(state, name), weights, name)
    digest = hashlib.sha256(data).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # all or nothing at --out
    try:
        run = Run.open(str(tmp))
        run.write_config(cfg.to_yaml())
        write_checkpoint(state.state_dict(), cfg.to_dict(), cfg.hash(), tmp / RunLayout.checkpoint(0), meta)
        run.write_status("completed", imported_from=pkl.name, sha256=digest)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the run from its team
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(args) -> int:
    from ganflow.models.interop import InteropError
    from ganflow.run.pickles import PickleRefused

    pkl, out = Path(args.pkl), Path(args.out)
    if not pkl.is_file():
        return die(f"PKL: {pkl} is not a file")
    if out.exists():
        return die(f"--out: {out} exists; name a new run directory (nothing was written)")
    try:
        run = import_pickle(pkl, out, list(args.overrides))
    except PickleRefused as err:
        return die(f"PKL: {pkl}: {err}")
    except (InteropError, ConfigError) as err:
        return die(f"PKL: {pkl}: {err}")
    log.info("imported %s: to fine-tune, ganflow train --resume %s data.path=IMAGES", pkl.name, run)
    print(run)
    return 0
