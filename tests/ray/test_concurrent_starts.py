"""Several ganflow commands starting their own local Ray at the same moment on one machine (issue
30, fault 13; a shell loop with `&`): each comes up. Before, each chose a free dashboard port and
handed it to Ray; two that chose 8265 in the same instant raced to bind it, and the loser failed
after Ray's 60 s wait for its dashboard (2 of 3 failed when this was written). Ray now picks the
dashboard's port itself, taking the next one when 8265 is taken."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.slow  # three local Rays at once: ~25 s on 2 cores
def test_three_commands_starting_their_own_ray_in_the_same_second_all_complete(tmp_path):
    from PIL import Image

    source = tmp_path / "images"
    source.mkdir()
    for i in range(20):
        Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(source / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    procs = [subprocess.Popen([sys.executable, "-m", "ganflow.cli", "data", "prepare", str(source), "--out",
                               str(tmp_path / f"set{k}"), "--resolution", "16", "--reference", "none", "--workers", "2",
                               "--shard-size", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert all((tmp_path / f"set{k}" / "manifest.json").is_file() for k in range(3))
