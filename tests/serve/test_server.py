"""The real server on a free loopback port: OIP v2 over raw HTTP and tritonclient, conformance with
the published OpenAPI document, bad input, batching, back-pressure, metrics, logs, auth, repository."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from package_models import WEIGHT, matmul_model, mlp_model
from server_helpers import RunningServer, running_server, strings_model, validate, with_binary_inlined

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.logs import query_logs
from zhisuan.serve.protocol import HEADER_LENGTH, encode_bytes_tensor
from zhisuan.serve.repository import Repository

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("serve")
    repo = Repository(root / "repo")
    repo.add(matmul_model(root / "mm.onnx"), name="mm")
    repo.add(matmul_model(root / "mm.onnx"), name="mm")  # version 2: same model
    repo.add(strings_model(root / "echo.onnx"), name="echo")
    config = ServerConfig(
        repo=root / "repo", token=TOKEN, max_queue_delay_ms=20.0, max_batch_size=16, threads=1,
        log_dir=root / "logs", telemetry_interval_s=0.2, max_payload_bytes=1 << 20,
    )
    with running_server(config) as server:
        yield server


@pytest.fixture
def client(served: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def _json_request(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}], **extra}


def _binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


# --- health and metadata ---------------------------------------------------------------------
def test_server_metadata_health_and_readiness(client: httpx.Client) -> None:
    for path in ("/v2", "/v2/"):
        meta = client.get(path)
        assert meta.status_code == 200
        validate("metadata_server_response", meta.json())
        assert meta.json()["name"] == "zhisuan" and "binary_tensor_data" in meta.json()["extensions"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/mm/ready").status_code == 200
    assert client.get("/v2/models/mm/versions/2/ready").status_code == 200
    assert client.get("/v2/models/mm/versions/7/ready").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_model_metadata_validates_against_the_published_spec(client: httpx.Client) -> None:
    for path in ("/v2/models/mm", "/v2/models/mm/versions/1"):
        reply = client.get(path)
        assert reply.status_code == 200
        body = reply.json()
        validate("metadata_model_response", body)
        assert body == {
            "name": "mm", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
        }
    missing = client.get("/v2/models/nope")
    assert missing.status_code == 404
    validate("metadata_model_error_response", missing.json())


# --- inference: JSON and binary ---------------------------------------------------------------
def test_json_infer_nested_and_flat_data(client: httpx.Client) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    request = _json_request(x, id="req-42")
    validate("inference_request", request)
    for data in (x.tolist(), x.reshape(-1).tolist()):
        request["inputs"][0]["data"] = data
        reply = client.post("/v2/models/mm/versions/1/infer", json=request, headers={"X-Request-ID": "trace-abc"})
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-Request-ID"] == "trace-abc"
        assert HEADER_LENGTH not in reply.headers
        body = reply.json()
        validate("inference_response", body)
        assert body["model_name"] == "mm" and body["model_version"] == "1" and body["id"] == "req-42"
        (out,) = body["outputs"]
        assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
        np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), x @ WEIGHT, rtol=1e-6)


def test_binary_inputs_and_outputs(client: httpx.Client) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    header = {
        "id": "b1",
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    body, headers = _binary_body(header, x.tobytes())
    reply = client.post("/v2/models/mm/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    n = int(reply.headers[HEADER_LENGTH])
    head = json.loads(reply.content[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 3 * 3 * 4
    validate("inference_response", with_binary_inlined(head, reply.content[n:]))
    y = np.frombuffer(reply.content[n:], dtype="<f4").reshape(3, 3)
    np.testing.assert_allclose(y, x @ WEIGHT, rtol=1e-5, atol=1e-6)
    # binary in, JSON out when the output asks for it
    header["outputs"] = [{"name": "y", "parameters": {"binary_data": False}}]
    body, headers = _binary_body(header, x.tobytes())
    reply = client.post("/v2/models/mm/infer", content=body, headers=headers)
    assert reply.status_code == 200 and HEADER_LENGTH not in reply.headers
    validate("inference_response", reply.json())
    # JSON in, every output binary via the request-level parameter
    reply = client.post("/v2/models/mm/infer", json=_json_request(x, parameters={"binary_data_output": True}))
    assert reply.status_code == 200 and HEADER_LENGTH in reply.headers


def test_bytes_tensors_json_and_binary_on_an_unbatched_model(client: httpx.Client, served: RunningServer) -> None:
    words = ["héllo", "", "zhisuan"]
    reply = client.post("/v2/models/echo/infer", json={
        "inputs": [{"name": "s", "shape": [3], "datatype": "BYTES", "data": words}],
        "outputs": [{"name": "t"}],
    })
    assert reply.status_code == 200, reply.text
    validate("inference_response", reply.json())
    assert reply.json()["outputs"] == [{"name": "t", "datatype": "BYTES", "shape": [3], "data": words}]
    blob = encode_bytes_tensor(np.array([w.encode() for w in words], dtype=object))
    header = {"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}],
              "parameters": {"binary_data_output": True}}
    body, headers = _binary_body(header, blob)
    reply = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    n = int(reply.headers[HEADER_LENGTH])
    doc = with_binary_inlined(json.loads(reply.content[:n]), reply.content[n:])
    validate("inference_response", doc)
    assert doc["outputs"][0]["data"] == words and doc["outputs"][1]["data"] == [3]
    assert not served.hub.models["echo"][1].batcher.batching  # no dynamic batch axis: served one by one


def test_tritonclient_binary_and_json(served: RunningServer) -> None:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(served.host_port)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("mm") and client.is_model_ready("mm", "2")
        assert client.get_server_metadata()["name"] == "zhisuan"
        assert client.get_model_metadata("mm", "1")["inputs"][0]["shape"] == [-1, 4]
        x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
        for binary in (True, False):
            tensor = http.InferInput("x", [5, 4], "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            result = client.infer(
                "mm", [tensor], model_version="2", request_id=f"tc-{binary}",
                outputs=[http.InferRequestedOutput("y", binary_data=binary)],
            )
            np.testing.assert_allclose(result.as_numpy("y"), x @ WEIGHT, rtol=1e-5, atol=1e-6)
            response = result.get_response()
            assert response["model_version"] == "2" and response["id"] == f"tc-{binary}"
        tensor = http.InferInput("x", [5, 4], "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("mm", [tensor])  # no outputs named: every output, binary
        assert result.as_numpy("y").shape == (5, 3)
        strings = http.InferInput("s", [2], "BYTES")
        strings.set_data_from_numpy(np.array([b"ab", b"c"], dtype=object))
        assert client.infer("echo", [strings]).as_numpy("t").tolist() == [b"ab", b"c"]
        from tritonclient.utils import InferenceServerException

        bad = http.InferInput("x", [5, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((5, 3), np.float32))
        with pytest.raises(InferenceServerException, match="shape"):
            client.infer("mm", [bad])
    finally:
        client.close()


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"inputs": []}', 400, "non-empty list"),
        (json.dumps({"inputs": [{"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode(), 400, "unknown input 'z'"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}).encode(), 400, "shape"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}).encode(), 400, "takes FP32"),
        (json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]}).encode(), 400, "has 3"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}).encode(), 400, "strings"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}).encode(), 400, "unsupported datatype"),
        (json.dumps({"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode(), 400, "non-negative"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2], [3]]}]}).encode(), 400, "ragged"),
        (json.dumps({**_json_request(np.zeros((1, 4), np.float32)), "outputs": [{"name": "nope"}]}).encode(), 400, "unknown output"),
        (json.dumps(_json_request(np.zeros((17, 4), np.float32))).encode(), 400, "max batch size"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "JSON"),  # deep nesting: refused, not a crash
    ],
    ids=lambda v: None if not isinstance(v, bytes) else v[:24].decode(errors="replace"),
)
def test_bad_json_requests_get_a_clear_400(client: httpx.Client, request_body: bytes, status: int, message: str) -> None:
    reply = client.post("/v2/models/mm/infer", content=request_body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    body = reply.json()
    validate("inference_error_response", body)
    assert message in body["error"]


@pytest.mark.parametrize(
    ("size", "blob", "header_length", "message"),
    [
        (64, b"\0" * 10, None, "remain in the body"),  # truncated binary data
        (2**62, b"\0" * 64, None, "remain in the body"),  # a huge declared size
        (48, b"\0" * 48, None, "needs 64 bytes"),  # size does not match the shape
        (64, b"\0" * 70, None, "no input's binary_data_size"),  # trailing bytes
        (64, b"\0" * 64, "999999", "must be a non-empty prefix"),  # header longer than the body
        (64, b"\0" * 64, "-3", "must be a non-empty prefix"),
        (64, b"\0" * 64, "abc", "must be an integer"),
    ],
)
def test_bad_binary_requests_get_a_clear_400(
    client: httpx.Client, size: int, blob: bytes, header_length: str | None, message: str
) -> None:
    header = {"inputs": [{"name": "x", "shape": [4, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    body, headers = _binary_body(header, blob)
    if header_length is not None:
        headers[HEADER_LENGTH] = header_length
    reply = client.post("/v2/models/mm/infer", content=body, headers=headers)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


def test_unknown_model_version_and_route_are_404_json(client: httpx.Client) -> None:
    x = _json_request(np.zeros((1, 4), np.float32))
    for path in ("/v2/models/nope/infer", "/v2/models/mm/versions/9/infer", "/v2/models/mm/versions/abc/infer"):
        reply = client.post(path, json=x)
        assert reply.status_code == 404 and "error" in reply.json()
    assert client.get("/v2/nothing/here").json() == {"error": "not found"}
    assert client.get("/v2/models/mm/infer").status_code == 405
    for path in ("/v2/models//infer", "/v2/models/mm/versions//infer", "/v2/models/mm/v/1/x/infer"):
        assert client.post(path, json=x).status_code == 404


def test_payload_limit_is_413_also_after_decompression(client: httpx.Client) -> None:
    import gzip

    big = b'{"inputs": [' + b" " * (2 << 20) + b"]}"
    reply = client.post("/v2/models/mm/infer", content=big, headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and "exceeds the limit" in reply.json()["error"]
    bomb = gzip.compress(big)  # ~2 KiB on the wire, 2 MiB inflated
    reply = client.post("/v2/models/mm/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 413
    ok = gzip.compress(json.dumps(_json_request(np.ones((1, 4), np.float32))).encode())
    assert client.post("/v2/models/mm/infer", content=ok, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert client.post("/v2/models/mm/infer", content=b"x", headers={"Content-Encoding": "br"}).status_code == 415


def test_fuzzed_bodies_never_crash_the_server(client: httpx.Client) -> None:
    rng = np.random.default_rng(7)
    valid = json.dumps(_json_request(np.ones((2, 4), np.float32))).encode()
    header = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]}
    binary, _ = _binary_body(header, b"\1" * 32)
    statuses = []
    for i in range(150):
        kind = i % 3
        if kind == 0:
            body = rng.bytes(int(rng.integers(0, 300)))
            headers: dict[str, str] = {}
            if rng.random() < 0.5:
                headers[HEADER_LENGTH] = str(int(rng.integers(-5, 400)))
        elif kind == 1:  # a valid JSON request, cut or with bytes flipped
            data = bytearray(valid[: int(rng.integers(0, len(valid)))] if rng.random() < 0.5 else valid)
            for _ in range(int(rng.integers(0, 4))):
                if data:
                    data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            body, headers = bytes(data), {}
        else:  # a valid binary request, truncated or with a wrong header length
            cut = int(rng.integers(1, len(binary)))
            body, headers = binary[:cut], {HEADER_LENGTH: str(int(rng.integers(1, len(binary) + 5)))}
        reply = client.post("/v2/models/mm/versions/1/infer", content=body, headers=headers)
        statuses.append(reply.status_code)
        assert reply.status_code < 500, (body, headers, reply.text)
        assert "error" in reply.json() or reply.status_code == 200
    assert statuses.count(400) > 100
    assert client.get("/v2/health/live").status_code == 200


def test_responses_are_not_held_back_by_nagle(client: httpx.Client) -> None:
    import socket
    import statistics
    import time

    from zhisuan.serve.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on accepted sockets only then
    sock.close()
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        assert client.get("/v2").status_code == 200
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.03  # Nagle + delayed ACK would make it >= 40 ms


# --- batching --------------------------------------------------------------------------------
async def _concurrent_infer(url: str, n: int, rows: int = 1) -> list[httpx.Response]:
    x = np.ones((rows, 4), np.float32)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=n)) as c:
        return await asyncio.gather(*(c.post("/v2/models/mm/versions/1/infer", json=_json_request(x)) for _ in range(n)))


def test_concurrent_requests_are_batched(served: RunningServer) -> None:
    lv = served.hub.models["mm"][1]
    calls_before, batches_before = lv.executor.state()["calls"], lv.batcher.batches
    replies = asyncio.run(_concurrent_infer(served.url, 48, rows=1))
    assert all(r.status_code == 200 for r in replies)
    runs = lv.executor.state()["calls"] - calls_before
    assert lv.batcher.batches - batches_before == runs
    assert runs < 48  # several requests shared a model run
    for r in replies:  # each request got its own row back
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], (np.ones((1, 4)) @ WEIGHT).reshape(-1), rtol=1e-6)
    metrics = httpx.get(served.url + "/metrics").text
    count = _sample(metrics, 'zhisuan_serve_batch_size_count{model="mm",version="1"}')
    total = _sample(metrics, 'zhisuan_serve_batch_size_sum{model="mm",version="1"}')
    assert total / count > 1.0  # batches of more than one row on average


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the metrics")


# --- metrics and logs ------------------------------------------------------------------------
def test_metrics_cover_requests_queues_replicas_rollouts_and_devices(client: httpx.Client) -> None:
    client.post("/v2/models/mm/versions/1/infer", json=_json_request(np.ones((1, 4), np.float32)))
    client.post("/v2/models/mm/versions/1/infer", content=b"{")
    client.post("/v2/models/who-knows/infer", content=b"{}")
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    assert _sample(text, 'zhisuan_serve_requests_total{code="200",model="mm",version="1"}') >= 1
    assert _sample(text, 'zhisuan_serve_request_failures_total{code="400",model="mm",version="1"}') >= 1
    assert _sample(text, 'zhisuan_serve_requests_total{code="404",model="_unknown",version=""}') >= 1
    assert "who-knows" not in text  # client-chosen names never become label values
    for series in (
        'zhisuan_serve_request_duration_seconds_bucket{le="0.005",model="mm",version="1"}',
        'zhisuan_serve_queue_duration_seconds_count{model="mm",version="1"}',
        'zhisuan_serve_inference_duration_seconds_count{model="mm",version="1"}',
        'zhisuan_serve_queue_depth{model="mm",version="1"}',
        'zhisuan_serve_model_ready{model="mm",version="1"}',
        'zhisuan_serve_replicas{model="mm",state="alive",version="1"}',
        'zhisuan_serve_rollout_weight{model="mm",version="2"}',
    ):
        _sample(text, series)
    assert _sample(text, 'zhisuan_serve_rollout_weight{model="mm",version="2"}') == 1.0  # the latest serves
    assert any(line.startswith("zhisuan_device_") for line in text.splitlines())  # telemetry of this machine


def test_request_logs_are_json_lines_with_the_request_id(client: httpx.Client, served: RunningServer) -> None:
    client.post("/v2/models/mm/versions/2/infer", json=_json_request(np.ones((1, 4), np.float32)),
                headers={"X-Request-ID": "log-me-1"})
    client.post("/v2/models/mm/versions/2/infer", content=b"{", headers={"X-Request-ID": "log-me-2"})
    log_dir = served.hub.config.logs_path
    mine: dict[str, Any] = {}
    deadline = time.monotonic() + 10  # a record is written after its response is sent
    while len(mine) < 2 and time.monotonic() < deadline:
        files = list(log_dir.glob("requests-*.jsonl"))
        assert len(files) == 1
        lines = [json.loads(line) for line in files[0].read_text().splitlines()]
        mine = {r["request_id"]: r for r in lines if r["request_id"].startswith("log-me-")}
        time.sleep(0.05)
    assert set(mine["log-me-1"]) == {"ts", "request_id", "model", "version", "status", "latency_ms", "queue_ms", "batch_size", "error"}
    assert mine["log-me-1"]["status"] == 200 and mine["log-me-1"]["version"] == "2" and mine["log-me-1"]["batch_size"] >= 1
    assert mine["log-me-2"]["status"] == 400 and "malformed JSON" in mine["log-me-2"]["error"]
    found = query_logs(log_dir, model="mm", status="4xx", since="5m")
    assert "log-me-2" in {r["request_id"] for r in found.records}
    assert all(str(r["status"]).startswith("4") for r in found.records)


# --- management: auth, repository, rollouts --------------------------------------------------
def test_management_needs_the_bearer_token(client: httpx.Client) -> None:
    endpoints = [
        ("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/mm/load"),
        ("POST", "/v2/repository/models/mm/unload"), ("GET", "/v2/zhisuan/rollout/mm"),
        ("POST", "/v2/zhisuan/rollout/mm"), ("POST", "/v2/zhisuan/rollout/mm/promote"),
        ("POST", "/v2/zhisuan/rollout/mm/rollback"),
    ]
    for method, path in endpoints:
        none = client.request(method, path)
        assert none.status_code == 401 and none.headers["WWW-Authenticate"] == "Bearer" and "error" in none.json()
        wrong = client.request(method, path, headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 403 and wrong.json()["error"] == "invalid bearer token"
    assert client.get("/v2/models/mm/ready").status_code == 200  # nothing was unloaded


def test_repository_index_unload_and_load(client: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    index = client.post("/v2/repository/index", headers=auth).json()
    assert {"name": "mm", "version": "2", "state": "READY"} in index
    assert client.post("/v2/repository/models/echo/unload", headers=auth).status_code == 200
    assert client.get("/v2/models/echo/ready").status_code == 404
    index = client.post("/v2/repository/index", headers=auth).json()
    assert {"name": "echo", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    assert client.post("/v2/repository/models/echo/load", headers=auth).status_code == 200
    assert client.get("/v2/models/echo/ready").status_code == 200
    assert client.post("/v2/repository/models/absent/load", headers=auth).status_code == 404


def test_rollout_weights_stickiness_promote_and_rollback(client: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    x = _json_request(np.ones((1, 4), np.float32))

    def versions(n: int, sticky: str | None = None) -> list[str]:
        headers = {"X-Zhisuan-Sticky": sticky} if sticky else {}
        return [client.post("/v2/models/mm/infer", json=x, headers=headers).json()["model_version"] for _ in range(n)]

    assert set(versions(5)) == {"2"}  # no rollout yet: the latest version
    status = client.post("/v2/zhisuan/rollout/mm", json={"weights": {"1": 70, "2": 30}}, headers=auth)
    assert status.status_code == 200, status.text
    assert status.json()["weights"] == {"1": 70.0, "2": 30.0} and status.json()["stable_weights"] == {"2": 100.0}
    seen = versions(60)
    assert 25 <= seen.count("1") <= 57 and seen.count("2") >= 3
    for user in ("alice", "bob", "carol"):
        assert len(set(versions(6, sticky=user))) == 1  # one user, one version
    assert client.post("/v2/zhisuan/rollout/mm/rollback", headers=auth).json()["weights"] == {"2": 100.0}
    assert set(versions(5)) == {"2"}
    promoted = client.post("/v2/zhisuan/rollout/mm/promote", json={"version": 1}, headers=auth).json()
    assert promoted["weights"] == {"1": 100.0} and promoted["stable_weights"] == {"1": 100.0}
    assert set(versions(5)) == {"1"}
    status = client.get("/v2/zhisuan/rollout/mm", headers=auth).json()
    assert [e["action"] for e in status["events"]][-3:] == ["set", "rollback", "promote"]
    assert status["versions"]["1"]["requests_total"] >= 5
    bad = client.post("/v2/zhisuan/rollout/mm", json={"weights": {"7": 100}}, headers=auth)
    assert bad.status_code == 400 and "no loaded version 7" in bad.json()["error"]
    bad = client.post("/v2/zhisuan/rollout/mm", json={"weights": "1=x"}, headers=auth)
    assert bad.status_code == 400
    bad = client.post("/v2/zhisuan/rollout/mm", json={"policy": {"max_error_rate": 7}}, headers=auth)
    assert bad.status_code == 400 and "between 0 and 1" in bad.json()["error"]
    client.post("/v2/zhisuan/rollout/mm/promote", json={"version": 2}, headers=auth)


# --- back-pressure and a server without a token ----------------------------------------------
@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A slow model, no batching, a queue of 2, and no management token."""
    root = tmp_path_factory.mktemp("tight")
    repo = Repository(root / "repo")
    repo.add(mlp_model(root / "mlp.onnx", width=256, layers=48), name="slow")
    config = ServerConfig(repo=root / "repo", max_batch_size=1, max_queue_size=2, threads=1, telemetry=False,
                          request_log=False)
    with running_server(config) as server:
        yield server


def test_full_queue_answers_429_with_retry_after(tight: RunningServer) -> None:
    x = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.1] * 256}]}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tight.url, timeout=60, limits=httpx.Limits(max_connections=40)) as c:
            return await asyncio.gather(*(c.post("/v2/models/slow/infer", json=x) for _ in range(40)))

    replies = asyncio.run(burst())
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 429} and codes.count(429) >= 10 and codes.count(200) >= 2
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and "queue is full" in refused.json()["error"]
    assert httpx.get(tight.url + "/v2/health/live").status_code == 200


def test_management_is_disabled_without_a_token(tight: RunningServer) -> None:
    for headers in ({}, {"Authorization": "Bearer anything-at-all"}):
        reply = httpx.get(tight.url + "/v2/zhisuan/rollout/slow", headers=headers)
        assert reply.status_code == 403 and "disabled" in reply.json()["error"] and "ZHISUAN_TOKEN" in reply.json()["error"]


def test_rollout_state_survives_a_restart(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    for _ in range(2):
        repo.add(matmul_model(tmp_path / "mm.onnx"), name="mm")
    config = ServerConfig(repo=tmp_path / "repo", token=TOKEN, telemetry=False, request_log=False)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(config) as server:
        httpx.post(server.url + "/v2/zhisuan/rollout/mm", headers=auth,
                   json={"weights": {"1": 90, "2": 10}, "policy": {"max_error_rate": 0.5}})
        for _ in range(50):  # the state is written by a worker thread
            if config.rollout_state_path.is_file():
                break
            asyncio.run(asyncio.sleep(0.05))
    with running_server(config) as server:
        status = httpx.get(server.url + "/v2/zhisuan/rollout/mm", headers=auth).json()
        assert status["weights"] == {"1": 90.0, "2": 10.0} and status["policy"]["max_error_rate"] == 0.5
        assert status["events"][-1]["action"] == "restore"
        # a version added to the repository is served after a load call, without a restart
        repo.add(matmul_model(tmp_path / "mm.onnx"), name="mm")
        loaded = httpx.post(server.url + "/v2/repository/models/mm/load", headers=auth).json()
        assert loaded == {"model": "mm", "loaded_versions": ["3"], "versions": ["1", "2", "3"]}
        assert httpx.get(server.url + "/v2/models/mm/versions/3/ready").status_code == 200
        status = httpx.get(server.url + "/v2/zhisuan/rollout/mm", headers=auth).json()
        assert status["weights"] == {"1": 90.0, "2": 10.0} and status["events"][-1]["action"] == "versions"


def test_bad_repository_is_a_user_error(tmp_path: Path) -> None:
    from zhisuan.errors import UserError
    from zhisuan.serve.hub import ModelHub

    with pytest.raises(UserError, match="not found"):
        asyncio.run(ModelHub(ServerConfig(repo=tmp_path / "missing")).start())
    Repository(tmp_path / "empty")
    with pytest.raises(UserError, match="holds no models"):
        asyncio.run(ModelHub(ServerConfig(repo=tmp_path / "empty", telemetry=False)).start())
    repo = Repository(tmp_path / "one")
    repo.add(matmul_model(tmp_path / "m.onnx"), name="m")
    with pytest.raises(UserError, match="no model 'other'"):
        asyncio.run(ModelHub(ServerConfig(repo=tmp_path / "one", models=("other",), telemetry=False)).start())


def test_binary_request_layout_matches_the_extension() -> None:
    # the BYTES wire format: 4-byte little-endian length, then the bytes
    assert encode_bytes_tensor(np.array([b"ab", b""], dtype=object)) == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
