"""Unloading a model under load (a real server, mock executors): every accepted request is answered
with its result; requests that arrive after the unload are refused at once, none waits for a 504."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
from package_models import matmul_model
from server_helpers import running_server

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.repository import Repository
from zhisuan.serve.testing import ExecutorCall, MockEngine

TOKEN = "unload-drain-token"


def _handler(call: ExecutorCall) -> dict[str, np.ndarray]:
    return {"y": call.feeds["x"][:, :3]}


def test_unload_under_load_answers_every_accepted_request(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(matmul_model(tmp_path / "mm.onnx"), name="mm")
    # a long queue delay keeps a batch filling while the unload comes; the timeout is what a dropped
    # request would wait for
    config = ServerConfig(repo=tmp_path / "repo", max_queue_delay_ms=200.0, max_batch_size=64, threads=1,
                          telemetry=False, request_log=False, request_timeout_s=4.0, token=TOKEN)
    statuses: list[tuple[int, str]] = []
    lock = threading.Lock()
    with running_server(config, executor_factory=MockEngine(_handler)) as served:
        def client(c: int) -> None:
            with httpx.Client(base_url=served.url, timeout=30) as http:
                for i in range(10):
                    x = np.full((1, 4), c * 10 + i, np.float32)
                    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x[0].tolist()}]}
                    response = http.post("/v2/models/mm/infer", json=body)
                    with lock:
                        statuses.append((response.status_code, response.text))
                    if response.status_code == 200:
                        assert response.json()["outputs"][0]["data"] == x[0, :3].tolist()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(20)]
        for t in threads:
            t.start()
        while sum(s == 200 for s, _ in list(statuses)) < 20:
            time.sleep(0.005)
        time.sleep(0.05)  # the next batch is filling
        started = time.monotonic()
        with httpx.Client(base_url=served.url, timeout=30) as http:
            unloaded = http.post("/v2/repository/models/mm/unload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert unloaded.status_code == 200, unloaded.text
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - started
    codes = [s for s, _ in statuses]
    assert len(codes) == 200 and 504 not in codes, [t for s, t in statuses if s != 200][:3]
    assert codes.count(200) >= 20  # the requests of the filling batch were answered
    assert all(s in (200, 404, 503) for s in codes)  # after the unload: unknown model, or closing
    assert elapsed < config.request_timeout_s / 2  # from the unload on, nobody waited for the request timeout
