"""`zhisuan serve --engine ray`: the same request path, batches run on Ray Serve replicas.

It runs as its own process, with its own local Ray instance, so that it neither depends on nor
disturbs a Ray instance other tests keep in the pytest process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from package_models import WEIGHT, matmul_model

from zhisuan.serve.repository import Repository

pytest.importorskip("ray.serve")


@pytest.mark.slow
def test_the_server_runs_batches_on_ray_serve(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(matmul_model(tmp_path / "mm.onnx"), name="mm")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "ZHISUAN_TOKEN": "ray-test-token"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhisuan", "serve", "--repo", str(tmp_path / "repo"), "--engine", "ray",
         "--replicas", "1", "--threads", "1", "--port", "0", "--json", "--no-telemetry", "--max-delay-ms", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        url = json.loads(line)["url"]
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
        reply = httpx.post(url + "/v2/models/mm/infer", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.array(reply.json()["outputs"][0]["data"]).reshape(2, 3), x @ WEIGHT, rtol=1e-6)
        assert httpx.get(url + "/v2/health/ready").status_code == 200
        metrics = httpx.get(url + "/metrics").text
        assert 'zhisuan_serve_replicas{model="mm",state="desired",version="1"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
