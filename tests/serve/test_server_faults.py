"""The real server under bad client input: every refusal is a 4xx with one line, never a 500 or a
traceback, and nothing a client sends can roll a canary back (issue "Serving under attack and faults")."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from package_models import matmul_model
from server_helpers import RunningServer, lookup_model, running_server, strings_model

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.protocol import HEADER_LENGTH
from zhisuan.serve.repository import Repository

TOKEN = "faults-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("faults")
    repo = Repository(root / "repo")
    repo.add(matmul_model(root / "mm.onnx"), name="mm")
    repo.add(matmul_model(root / "mm.onnx"), name="mm")
    repo.add(matmul_model(root / "stable.onnx"), name="clf")
    repo.add(lookup_model(root / "canary.onnx"), name="clf")  # v2: Gather out of range when max(x) >= 10
    repo.add(strings_model(root / "echo.onnx"), name="echo")
    config = ServerConfig(repo=root / "repo", token=TOKEN, telemetry=False, request_log=False,
                          max_queue_delay_ms=1.0, threads=1)
    with running_server(config) as server:
        yield server


@pytest.fixture
def client(served: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def _x(data: Any, shape: list[int], datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}


def _binary(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + blob, {HEADER_LENGTH: str(len(head))}


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a client's request logged a traceback"


# --- 3. shapes are validated before anything sees them ------------------------------------------
@pytest.mark.parametrize("shape", [[1] * 65, [1] * 33, [0, 2**62], [0, 2**40, 2**40], [2**63, 0]])
def test_absurd_shapes_are_400_with_one_line(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, shape: list[int]
) -> None:
    caplog.set_level(logging.INFO, logger="zhisuan.serve")
    count = int(np.prod(shape, dtype=object))  # the data matches the shape: only its limits are wrong
    for model in ("mm", "echo"):
        datatype = "BYTES" if model == "echo" else "FP32"
        name = "s" if model == "echo" else "x"
        data, blob = (["a"] * count, b"\1\0\0\0a" * count) if model == "echo" else ([1.0] * count, b"\0" * 4 * count)
        json_body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
        body, headers = _binary({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                             "parameters": {"binary_data_size": len(blob)}}]}, blob)
        for reply in (client.post(f"/v2/models/{model}/infer", json=json_body),
                      client.post(f"/v2/models/{model}/infer", content=body, headers=headers)):
            assert reply.status_code == 400, reply.text
            assert "\n" not in reply.json()["error"] and "internal error" not in reply.json()["error"]
    _no_tracebacks(caplog)


def test_input_caused_model_errors_are_4xx_and_do_not_roll_the_canary_back(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """An anonymous client sending inputs that make the canary's Gather index run out of range gets
    422s; the canary's window counts no errors and the rollout stays where the operator put it."""
    caplog.set_level(logging.INFO, logger="zhisuan.serve")
    set_reply = client.post("/v2/zhisuan/rollout/clf", headers=AUTH, json={
        "weights": {"1": 50, "2": 50}, "policy": {"max_error_rate": 0.2, "window_s": 60, "min_requests": 8}})
    assert set_reply.status_code == 200, set_reply.text
    bad = _x([50, 2, 3, 4], [1, 4])
    replies = [client.post("/v2/models/clf/infer", json=bad) for _ in range(40)]
    replies += [client.post("/v2/models/clf/versions/2/infer", json=bad) for _ in range(10)]
    codes = {r.status_code for r in replies}
    assert codes <= {200, 422} and 422 in codes, codes
    refused = next(r for r in replies if r.status_code == 422).json()["error"]
    assert "clf v2 refused this input" in refused and "INVALID_ARGUMENT" in refused and "\n" not in refused
    status = client.get("/v2/zhisuan/rollout/clf", headers=AUTH).json()
    assert status["weights"] == {"1": 50.0, "2": 50.0}
    assert all(e["action"] != "auto-rollback" for e in status["events"])
    assert status["versions"]["2"]["server_errors_total"] == 0
    metrics = client.get("/metrics").text
    assert 'zhisuan_serve_rollout_auto_rollbacks_total{model="clf"}' not in metrics
    assert 'zhisuan_serve_requests_total{code="422",model="clf",version="2"}' in metrics
    _no_tracebacks(caplog)
    # the canary still answers the inputs it can take
    good = client.post("/v2/models/clf/versions/2/infer", json=_x([1, 2, 3, 4], [1, 4]))
    assert good.status_code == 200


# --- 9. leniency that is now a 4xx ---------------------------------------------------------------
@pytest.mark.parametrize("data", [[None], [{"a": 1}], [1], ["ok", 5], [["a"], [None]], [True]])
def test_bytes_json_holds_strings_only(client: httpx.Client, data: list[Any]) -> None:
    shape = [len(data), 1] if isinstance(data[0], list) else [len(data)]
    reply = client.post("/v2/models/echo/infer", json={
        "inputs": [{"name": "s", "shape": shape, "datatype": "BYTES", "data": data}]})
    assert reply.status_code == 400, reply.text
    assert "BYTES" in reply.json()["error"] or "holds" in reply.json()["error"]


def test_floats_out_of_range_are_refused(client: httpx.Client) -> None:
    for value in (1e39, -3.5e38):
        reply = client.post("/v2/models/mm/infer", json=_x([value, 0, 0, 0], [1, 4]))
        assert reply.status_code == 400 and "out of range for FP32" in reply.json()["error"], reply.text
    assert client.post("/v2/models/mm/infer", json=_x([3.4e38, 0, 0, 0], [1, 4])).status_code == 200


def test_gzip_with_trailing_bytes_is_refused(client: httpx.Client) -> None:
    packed = gzip.compress(json.dumps(_x([1, 2, 3, 4], [1, 4])).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert client.post("/v2/models/mm/infer", content=packed, headers=headers).status_code == 200
    reply = client.post("/v2/models/mm/infer", content=packed + b"junk", headers=headers)
    assert reply.status_code == 400 and "follow the end of the gzip body" in reply.json()["error"]


@pytest.mark.parametrize("version", ["01", "+1", "%201", "1%20", "1_0", "0"])
def test_only_canonical_version_numbers_name_a_version(client: httpx.Client, version: str) -> None:
    assert client.get("/v2/models/mm/versions/1").status_code == 200
    assert client.get(f"/v2/models/mm/versions/{version}").status_code == 404
    assert client.get(f"/v2/models/mm/versions/{version}/ready").status_code == 404
    reply = client.post(f"/v2/models/mm/versions/{version}/infer", json=_x([1, 2, 3, 4], [1, 4]))
    assert reply.status_code == 404, reply.text


@pytest.mark.parametrize("body", [
    {"weights": {"1": True}},
    {"weights": {"1": 1e308, "2": 1e308}},
    {"weights": {"01": 50, "2": 50}},
    {"weights": {"1": None}},
    {"weights": {"1": 50}, "policy": {"window_s": True}},
    {"weights": {"1": 50}, "policy": {"min_requests": 2.5}},
])
def test_bad_rollout_weights_are_400(client: httpx.Client, body: dict[str, Any]) -> None:
    before = client.get("/v2/zhisuan/rollout/mm", headers=AUTH).json()["weights"]
    reply = client.post("/v2/zhisuan/rollout/mm", headers=AUTH, json=body)
    assert reply.status_code == 400, reply.text
    assert client.get("/v2/zhisuan/rollout/mm", headers=AUTH).json()["weights"] == before


@pytest.mark.parametrize("version", [1.5, True, "1.5", "01", 0, None])
def test_promote_needs_a_whole_version_number(client: httpx.Client, version: Any) -> None:
    reply = client.post("/v2/zhisuan/rollout/mm/promote", headers=AUTH, json={"version": version})
    assert reply.status_code == 400, reply.text


@pytest.mark.parametrize("param", ["shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"])
def test_input_level_shared_memory_is_refused(client: httpx.Client, param: str) -> None:
    body = _x([1, 2, 3, 4], [1, 4])
    body["inputs"][0]["parameters"] = {param: "region0"}
    reply = client.post("/v2/models/mm/infer", json=body)
    assert reply.status_code == 400 and param in reply.json()["error"], reply.text


def test_duplicate_requested_outputs_are_refused(client: httpx.Client) -> None:
    body = {**_x([1, 2, 3, 4], [1, 4]), "outputs": [{"name": "y"}, {"name": "y"}]}
    reply = client.post("/v2/models/mm/infer", json=body)
    assert reply.status_code == 400 and "requested twice" in reply.json()["error"], reply.text


@pytest.mark.parametrize("entry", [
    [1, 2],
    "nonsense",
    {"weights": 5, "stable_weights": {"1": 1}},
    {"weights": {"1": True}, "stable_weights": {"1": 1}},
    {"weights": {"1": 10}, "stable_weights": {"1": 1}, "policy": [1]},
])
def test_a_wrong_typed_saved_rollout_is_reported_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, entry: Any
) -> None:
    repo = Repository(tmp_path / "repo")
    for _ in range(2):
        repo.add(matmul_model(tmp_path / "mm.onnx"), name="mm")
    config = ServerConfig(repo=tmp_path / "repo", token=TOKEN, telemetry=False, request_log=False)
    good = {"weights": {"1": 70, "2": 30}, "stable_weights": {"2": 100}, "policy": {}}
    config.rollout_state_path.write_text(json.dumps({"mm": entry, "other": good}), encoding="utf-8")
    caplog.set_level(logging.INFO, logger="zhisuan.serve")
    with running_server(config) as server:
        status = httpx.get(server.url + "/v2/zhisuan/rollout/mm", headers=AUTH).json()
        assert status["weights"] == {"2": 100.0}  # the defaults
        reply = httpx.post(server.url + "/v2/models/mm/infer", json=_x(np.ones(4).tolist(), [1, 4]))
        assert reply.status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "saved rollout state of mm" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    _no_tracebacks(caplog)
