"""Quality of a finished run's EMA generator.

digits runs: class coverage and Frechet distance in the bundled digits classifier's feature
space, against the real-vs-real floor at the same N. ring/grid runs: modes covered and the share
of samples within 3 std of a centre.

    python benchmarks/quality.py RUN_DIR [--num 2000]
"""

from __future__ import annotations

import argparse
import json

import torch

from ganflow import checkpoint as ckpt
from ganflow.config import from_dict
from ganflow.data import build_dataset
from ganflow.sample import generate, load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--num", type=int, default=2000)
    args = p.parse_args()
    G, meta, path = load_generator(args.run)
    cfg = from_dict(ckpt.read_manifest(path)["config"])
    x, _ = generate(G, args.num, seed=1234)
    if cfg.data.name in ("ring", "grid"):
        from ganflow.metrics.modes import mode_coverage

        ds = build_dataset(cfg.data, cfg.train.seed)
        report = mode_coverage(x, ds.centers, ds.std)
    else:
        from ganflow.metrics.digits import digits_report

        report = digits_report(x)
    report["checkpoint"] = str(path)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
