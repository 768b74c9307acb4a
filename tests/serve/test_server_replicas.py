"""`--replicas N` through the real server: worker processes, a replica killed under load, a stopped (stuck) one."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
from package_models import matmul_model, mlp_model, mlp_reference
from server_helpers import running_server

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.executor import make_executor
from zhisuan.serve.package import pack
from zhisuan.serve.ray_engine import ray_available
from zhisuan.serve.repository import Repository
from zhisuan.serve.testing import MockEngine


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


def _factory_with_timeout(config: ServerConfig):  # type: ignore[no-untyped-def]
    # The hub forwards ServerConfig.request_timeout_s itself once it passes it to the factory (see
    # test_the_request_timeout_reaches_the_executor); a call-time option wins over partial's.
    return functools.partial(make_executor, request_timeout_s=config.request_timeout_s)


def test_a_stopped_replica_is_stuck_after_the_request_timeout_and_replaced(tmp_path: Path) -> None:
    model = mlp_model(tmp_path / "mlp.onnx", width=64, layers=4)
    repo = Repository(tmp_path / "repo")
    repo.add(model, name="mlp")
    config = ServerConfig(repo=tmp_path / "repo", replicas=2, threads=2, telemetry=False, request_log=False,
                          max_queue_delay_ms=0.0, max_batch_size=1, request_timeout_s=3.0)
    x = np.ones((1, 64), dtype=np.float32)
    body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    with running_server(config, executor_factory=_factory_with_timeout(config)) as server:
        pool = server.hub.models["mlp"][1].executor
        assert pool.request_timeout_s == 3.0 and pool.state()["stuck"] == 0
        victim = pool.state()["pids"][0]
        os.kill(victim, signal.SIGSTOP)  # alive to the OS, its socket open: only the timeout can tell
        stopped = time.monotonic()
        try:
            seen_stuck, statuses, metrics = 0, [], ""
            with httpx.Client(base_url=server.url, timeout=60) as client:
                async def two() -> list[int]:
                    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                        replies = await asyncio.gather(*(c.post("/v2/models/mlp/infer", json=body) for _ in range(2)))
                    return [r.status_code for r in replies]

                # keep both replicas offered work until the stopped one is replaced
                while time.monotonic() - stopped < 25:
                    statuses += asyncio.run(two())
                    state = pool.state()
                    if state["stuck"]:
                        seen_stuck = state["stuck"]
                        metrics = client.get("/metrics").text
                    if victim not in state["pids"] and state["alive"] == 2:
                        break
            replaced = time.monotonic() - stopped
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        # 3 s timeout + a restart; it took the fixed 30 s before the timeout was honoured
        assert victim not in state["pids"] and state["alive"] == 2 and replaced < 15, (replaced, state)
        assert seen_stuck == 1 and state["stuck"] == 0 and state["stuck_restarts"] == 1
        assert 504 in statuses and set(statuses) <= {200, 504}
        assert "ran one batch for over 3 s" in state["last_error"]
        # while it is stuck it does not count as alive: /metrics shows one alive replica of two
        assert 'zhisuan_serve_replicas{model="mlp",state="alive",version="1"} 1.0' in metrics
        assert 'zhisuan_serve_replicas{model="mlp",state="stuck",version="1"} 1.0' in metrics


def test_the_request_timeout_reaches_the_executor(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(matmul_model(tmp_path / "mm.onnx"), name="mm")
    engine = MockEngine(lambda call: {"y": np.zeros((call.feeds["x"].shape[0], 3), dtype=np.float32)})
    config = ServerConfig(repo=tmp_path / "repo", replicas=2, telemetry=False, request_log=False, request_timeout_s=7.5)
    with running_server(config, executor_factory=engine):
        assert engine.options[("mm", 1)].get("request_timeout_s") == 7.5


def test_make_executor_gives_replicas_and_ray_the_request_timeout(tmp_path: Path) -> None:
    package = pack(matmul_model(tmp_path / "mm.onnx"), tmp_path / "pkg")
    assert make_executor(package, replicas=2, request_timeout_s=90.0).request_timeout_s == 90.0  # not started
    if ray_available():  # a RayExecutor starts Ray only when it starts
        assert make_executor(package, replicas=1, engine="ray", request_timeout_s=90.0).request_timeout_s == 90.0
