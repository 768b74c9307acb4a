"""The real server on a loopback port with a mock engine: HTTP, checks, processing, batching and rollouts
run for real, while every model run is a Python function (no runtime is ever opened)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from package_models import matmul_model
from server_helpers import RunningServer, running_server, validate

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.package import Package
from zhisuan.serve.repository import Repository
from zhisuan.serve.testing import ExecutorCall, MockEngine


def _handler(call: ExecutorCall) -> dict[str, np.ndarray]:
    x = call.feeds["x"]
    if np.any(x < 0):
        raise RuntimeError("the backend fell over")
    return {"y": x[:, :3] * call.version}  # version 2 doubles: which version answered shows


@pytest.fixture(scope="module")
def engine() -> MockEngine:
    return MockEngine(_handler)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, engine: MockEngine) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("mock")
    repo = Repository(root / "repo")
    repo.add(matmul_model(root / "mm.onnx"), name="mm")
    repo.add(matmul_model(root / "mm.onnx"), name="mm")
    repo.add(matmul_model(root / "mm.onnx"), name="cls", postprocess=[{"op": "argmax", "output": "y", "as": "best"}])
    config = ServerConfig(repo=root / "repo", max_queue_delay_ms=50.0, max_batch_size=16, threads=1,
                          telemetry=False, request_log=False)

    def no_runtime(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model runtime was opened")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Package, "open_runner", no_runtime)
        with running_server(config, executor_factory=engine) as server:
            yield server


@pytest.fixture
def client(served: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def _request(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


def test_every_version_gets_an_executor_from_the_factory(engine: MockEngine, served: RunningServer) -> None:
    assert set(engine.executors) == {("mm", 1), ("mm", 2), ("cls", 1)}
    assert served.hub.models["mm"][2].executor is engine.executors["mm", 2]
    defaults = ServerConfig(repo=Path())
    assert engine.options["mm", 1] == {"replicas": 1, "engine": "local", "runtime": None, "threads": 1,
                                       "concurrency": defaults.batches_in_flight,
                                       "request_timeout_s": defaults.request_timeout_s}


def test_inference_answers_from_the_handler(engine: MockEngine, client: httpx.Client) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    reply = client.post("/v2/models/mm/versions/2/infer", json=_request(x))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    validate("inference_response", body)
    assert body["model_version"] == "2"
    assert body["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [2, 3], "data": (x[:, :3] * 2).ravel().tolist()}]
    call = engine.calls[-1]
    assert (call.model, call.version) == ("mm", 2)
    np.testing.assert_array_equal(call.feeds["x"], x)


def test_postprocessing_runs_on_what_the_handler_gives(client: httpx.Client) -> None:
    x = np.array([[0, 5, 1, 9], [7, 2, 3, 0]], dtype=np.float32)
    reply = client.post("/v2/models/cls/infer", json=_request(x))
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["best"]["datatype"] == "INT64" and outputs["best"]["data"] == [1, 0]


def test_signature_checks_refuse_before_the_executor(engine: MockEngine, client: httpx.Client) -> None:
    before = len(engine.calls)
    reply = client.post("/v2/models/mm/infer", json=_request(np.ones((1, 5), np.float32)))
    assert reply.status_code == 400 and "has shape [1, 5]" in reply.json()["error"]
    assert len(engine.calls) == before


def test_a_failing_backend_is_a_500_and_serving_goes_on(client: httpx.Client) -> None:
    reply = client.post("/v2/models/mm/versions/1/infer", json=_request(-np.ones((1, 4), np.float32)))
    assert reply.status_code == 500
    assert reply.json() == {"error": "mm v1 failed to run: the backend fell over"}
    assert client.post("/v2/models/mm/versions/1/infer", json=_request(np.ones((1, 4), np.float32))).status_code == 200
    state = client.get("/metrics").text
    assert 'zhisuan_serve_requests_total{code="500",model="mm",version="1"}' in state


def test_a_version_that_is_not_ready_is_a_503(engine: MockEngine, client: httpx.Client) -> None:
    executor = engine.executors["mm", 1]
    executor.ready = False
    try:
        reply = client.post("/v2/models/mm/versions/1/infer", json=_request(np.ones((1, 4), np.float32)))
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
        assert client.get("/v2/models/mm/versions/1/ready").status_code == 503
        assert client.get("/v2/health/ready").status_code == 503
    finally:
        executor.ready = True
    assert client.get("/v2/health/ready").status_code == 200


def test_concurrent_requests_reach_the_executor_as_one_batch(engine: MockEngine, served: RunningServer) -> None:
    async def send(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=httpx.Limits(max_connections=n)) as c:
            rows = [np.full((1, 4), i, np.float32) for i in range(n)]
            return await asyncio.gather(*(c.post("/v2/models/mm/versions/1/infer", json=_request(x)) for x in rows))

    before = len(engine.calls)
    replies = asyncio.run(send(12))
    assert [r.json()["outputs"][0]["data"] for r in replies] == [[float(i)] * 3 for i in range(12)]
    calls = engine.calls[before:]
    assert sum(c.feeds["x"].shape[0] for c in calls) == 12
    assert len(calls) < 12  # rows from several requests shared one executor call


def test_the_engine_is_parsed_once_into_an_enum(tmp_path: Path) -> None:
    from zhisuan.errors import UserError
    from zhisuan.serve.config import Engine
    from zhisuan.serve.executor import make_executor

    config = ServerConfig(repo=tmp_path, engine="ray")
    assert config.engine is Engine.RAY and config.to_dict()["engine"] == "ray"
    with pytest.raises(UserError, match="unknown engine 'k8s'; choose local or ray"):
        ServerConfig(repo=tmp_path, engine="k8s")
    with pytest.raises(UserError, match="unknown engine 'k8s'; choose one of: local, ray"):
        make_executor(None, engine="k8s")  # type: ignore[arg-type]
