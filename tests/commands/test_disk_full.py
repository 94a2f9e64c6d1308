"""A full disk (issue 30, fault 12) is one line and exit 1, not a 30-line traceback, and leaves no
half-written file: forced with a file size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write
past it fails with EFBIG just as one on a full disk fails with ENOSPC)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import numpy as np

from ganflow.data.prepared import MANIFEST


def test_data_prepare_on_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path):
    from PIL import Image

    source, out = tmp_path / "images", tmp_path / "set"
    source.mkdir()
    for i in range(20):
        Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(source / f"{i}.png")

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # the settings fit; the first shard does not

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "ganflow.cli", "data", "prepare", str(source), "--out", str(out),
                           "--resolution", "16", "--reference", "none", "--workers", "1"],
                          preexec_fn=limited, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ganflow: error: file too large") and "make room and run it again" in line
    assert not (out / MANIFEST).exists()
    assert [p.name for p in (out / "shards").iterdir()] == [], "no partial shard, no temporary file"
