"""Transfer learning on digits (`train.init_from`), 2 CPU cores, in this process (ganflow's fit(), no
Ray): the quickstart DCGAN trained on all 1797 digits for --source-steps, then trained on the
digits of one class (--digit, ~180 images) for --steps from those weights and, for comparison,
from scratch with the same recipe and seed. Printed: digits FID (the digits classifier's features,
lower is better) of each on --num samples against that class's digits, at every --every steps.

    python benchmarks/transfer_digits.py [--source-steps 3000] [--steps 1000] [--digit 3] [--num 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ganflow.core.fit import fit
from ganflow.job import batches_for, build_training, load_job
from ganflow.metrics.scoring import score
from ganflow.run import checkpoint as ckpt

JOB = Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"
QUIET = ["tracking.wandb.mode=disabled", "train.log_every=100"]


def train(overrides, every: int, num: int) -> dict:
    """Steps -> digits FID of the EMA generator, scored every `every` steps; and the state."""
    cfg = load_job(JOB, QUIET + overrides + [f"train.sample_every={every}", f"train.checkpoint_every={every}"])
    dataset, state = build_training(cfg, torch.device("cpu"))
    curve = {}

    def hook(end):
        if end.step % every == 0:
            curve[end.step] = score(state.sampler_model.eval(), cfg, ["fid"], num)["fid"]
            state.sampler_model.train(state.G_ema is None)

    fit(cfg, state, batches_for(cfg, dataset), hook)
    return {"curve": curve, "state": state, "cfg": cfg, "images": len(dataset)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-steps", type=int, default=3000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--digit", default="3")
    p.add_argument("--num", type=int, default=1000)
    args = p.parse_args()
    started = time.perf_counter()
    source = train([f"train.steps={args.source_steps}"], args.source_steps, args.num)
    print(f"source: quickstart on all digits, {args.source_steps} steps in {time.perf_counter() - started:.0f} s, "
          f"digits FID {source['curve'][args.source_steps]:.2f} (all digits)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        st, cfg = source["state"], source["cfg"]
        where = ckpt.write_checkpoint(st.state_dict(), cfg.to_dict(), cfg.hash(), Path(tmp) / "source")
        target = [f"train.steps={args.steps}", f"data.classes=[{args.digit!r}]"]
        runs = {"from the digits run (train.init_from)": train(target + [f"train.init_from={where}"], args.every, args.num),
                "from scratch": train(target, args.every, args.num)}
    for label, run in runs.items():
        points = ", ".join(f"{k}: {v:.2f}" for k, v in run["curve"].items())
        print(f"{label}, {run['images']} images of digit {args.digit}: digits FID by step {{{points}}}", flush=True)


if __name__ == "__main__":
    main()
