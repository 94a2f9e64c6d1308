"""Images from someone else (issue 30, fault 8): decompression bombs, members that inflate past the
bound, 16-bit modes, truncated files and out-of-range labels are one line naming the file, left out
and listed by `data prepare` (or failing it with --on-error fail), and refused before Ray by train."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from ganflow import cli
from ganflow.data.images import MAX_FILE_BYTES
from ganflow.data.prepared import MANIFEST
from ganflow.data.readers import ImagesError, read_images
from tests.conftest import JOBS, cli_here


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height: Pillow sizes an image by its header."""
    data = bytearray(png(np.zeros((1, 1), np.uint8)))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


GOOD = [png(np.full((12, 12, 3), 40 * i, np.uint8)) for i in range(3)]
HOSTILE = {
    "bomb.png": (claiming(40000, 40000), "DecompressionBombError"),
    "large.png": (claiming(9000, 9000), "over the bound of 67108864"),
    "deep.png": (png(np.full((8, 8), 4000, np.uint16)), "pixel mode I;16"),
    "cut.png": (png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:300], "OSError"),
}


def prepare_here(capsys, *args) -> subprocess.CompletedProcess:
    return cli_here("data", "prepare", *args)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A dataset_tool-style zip of 4 KB holding three good images, the hostile files above, and a
    member that inflates to 80 MB (zeros deflate 1000:1)."""
    path = tmp_path_factory.mktemp("zip") / "set.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i, data in enumerate(GOOD):
            z.writestr(f"00000/img{i:08d}.png", data)
        for name, (data, _) in HOSTILE.items():
            z.writestr(f"00000/{name}", data)
        z.writestr("00000/inflates.png", bytes(MAX_FILE_BYTES + (16 << 20)))
    return path


def test_hostile_files_in_an_archive_are_left_out_and_listed_by_name(archive, tmp_path, capsys):
    out = tmp_path / "set"
    proc = prepare_here(capsys, str(archive), "--out", str(out), "--resolution", "8", "--reference", "none")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["count"] == len(GOOD)
    skipped = {Path(name).name: why for name, why in manifest["skipped"]}
    assert set(skipped) == set(HOSTILE) | {"inflates.png"}
    for name, (_, why) in HOSTILE.items():
        assert why in skipped[name], (name, skipped[name])
        assert f"skipped 00000/{name}: " in proc.stderr
    assert "over the bound of" in skipped["inflates.png"]
    assert "Traceback" not in proc.stderr


def test_on_error_fail_names_the_first_bad_file_and_writes_no_manifest(archive, tmp_path, capsys):
    out = tmp_path / "set"
    proc = prepare_here(capsys, str(archive), "--out", str(out), "--resolution", "8", "--reference", "none",
                        "--on-error", "fail")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("ganflow: error: SOURCE: 00000/") and "5 such file(s)" in line and "--on-error skip" in line
    assert not (out / MANIFEST).exists()


def test_a_label_out_of_range_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "labels.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.png", GOOD[0])
        z.writestr("dataset.json", json.dumps({"labels": [["a.png", 3_000_000]]}))
    proc = prepare_here(capsys, str(path), "--out", str(tmp_path / "out"), "--resolution", "8", "--reference", "none")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "labels a.png as 3000000; labels are integers in [0, 65536)" in line
    assert not (tmp_path / "out").exists()


def test_a_bad_image_in_a_training_folder_is_named_before_ray_and_by_score(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, data in enumerate(GOOD):
        (folder / f"{i}.png").write_bytes(data)
    (folder / "bomb.png").write_bytes(HOSTILE["bomb.png"][0])
    code = cli.main(["train", str(JOBS / "quickstart.yaml"), "data.name=images", f"data.path={folder}",
                     "data.resolution=8", f"storage.uri={tmp_path / 'runs'}"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and f"data.path: {folder / 'bomb.png'}: DecompressionBombError" in line
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ImagesError, match=r"bomb\.png: DecompressionBombError"):
        read_images(str(folder), (3, 8, 8))
