"""`--replicas N` through the real server: worker processes, and a replica killed under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
from package_models import mlp_model, mlp_reference
from server_helpers import running_server

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.repository import Repository


def test_killing_a_replica_under_load_loses_no_request(tmp_path: Path) -> None:
    model = mlp_model(tmp_path / "mlp.onnx", width=128, layers=16)
    repo = Repository(tmp_path / "repo")
    repo.add(model, name="mlp")
    config = ServerConfig(repo=tmp_path / "repo", replicas=2, threads=2, telemetry=False, request_log=False,
                          max_queue_delay_ms=1.0, max_batch_size=4)
    x = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    expected = mlp_reference(x, model)
    body = {"inputs": [{"name": "x", "shape": [1, 128], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    with running_server(config) as server:
        lv = server.hub.models["mlp"][1]
        state = lv.executor.state()
        assert state["engine"] == "local-replicas" and state["alive"] == 2
        victim = state["pids"][0]
        assert victim is not None and victim != os.getpid()

        async def load() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                async def one(i: int) -> httpx.Response:
                    if i == 40:
                        os.kill(victim, signal.SIGKILL)  # mid-load
                    return await c.post("/v2/models/mlp/infer", json=body)

                return await asyncio.gather(*(one(i) for i in range(120)))

        replies = asyncio.run(load())
        assert [r.status_code for r in replies] == [200] * 120, {r.text for r in replies if r.status_code != 200}
        for r in replies[:3]:
            np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]), expected.reshape(-1), atol=1e-4)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = lv.executor.state()
            if state["alive"] == 2 and state["restarts"] >= 1:
                break
            time.sleep(0.1)
        assert state["restarts"] >= 1 and state["alive"] == 2 and victim not in state["pids"]
        metrics = httpx.get(server.url + "/metrics").text
        assert 'zhisuan_serve_replicas{model="mlp",state="alive",version="1"} 2.0' in metrics
        assert 'zhisuan_serve_replica_restarts_total{model="mlp",version="1"} 1.0' in metrics
