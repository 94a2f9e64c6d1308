"""`ganflow serve` (issue 31): a real HTTP client on loopback against Ray Serve. Samples are those of
`ganflow.load_generator(...).sample` for the same seed, bad parameters are a 400 with one line,
/health names the checkpoint, concurrent requests are all answered (batched), SIGTERM stops it."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ganflow
from tests.conftest import trained_checkpoint


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


@pytest.mark.slow  # a local Ray and Ray Serve: ~20 s on 2 cores
def test_serve_answers_a_real_http_client_and_stops_on_sigterm(tmp_path):
    checkpoint = trained_checkpoint(tmp_path, "cdcgan_digits.yaml", steps=1, overrides=("model.ngf=4", "model.ndf=4",
                                                                                        "data.resolution=16"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"  # files, not pipes: Serve logs a lot
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "ganflow.cli", "serve", str(checkpoint), "--port", str(port)],
                                stdout=o, stderr=e, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while url not in out.read_text().splitlines():  # printed once the application is running
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.time() < deadline, "serve never came up"
            time.sleep(0.5)
        status, _, body = get(f"{url}/health")
        assert status == 200
        health = json.loads(body)
        assert health["step"] == 1 and health["num_classes"] == 10 and health["checkpoint"] == str(checkpoint)

        status, kind, body = get(f"{url}/sample?n=5&label=3&seed=7&format=npz")
        assert status == 200
        served = np.load(io.BytesIO(body))
        expected = ganflow.load_generator(str(checkpoint)).sample(5, labels=3, seed=7).numpy()
        np.testing.assert_array_equal(served["images"], expected)
        assert served["labels"].tolist() == [3] * 5
        status, kind, body = get(f"{url}/sample?n=4")
        assert status == 200 and kind == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
        for query, message in (("n=0", "n: must be in [1, 256], got 0"), ("n=4&label=10", "label: must be in [0, 9], got 10"),
                               ("n=4&format=gif", "format: png or npz, got 'gif'"),
                               ("n=4&psi=1", "psi: not a parameter of /sample (n, label, seed, truncation, format)")):
            status, _, body = get(f"{url}/sample?{query}")
            assert status == 400 and body.decode().strip() == message

        with ThreadPoolExecutor(8) as pool:  # concurrent requests, batched by serve.batch: each its own samples
            answers = list(pool.map(lambda seed: get(f"{url}/sample?n=2&seed={seed}&format=npz"), range(8)))
        g = ganflow.load_generator(str(checkpoint))
        for seed, (status, _, body) in enumerate(answers):
            assert status == 200
            np.testing.assert_array_equal(np.load(io.BytesIO(body))["images"], g.sample(2, seed=seed).numpy())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 0, err.read_text()[-3000:]
    assert "[ganflow] serve: stopping" in err.read_text()
