"""Gray release: weights, stickiness, promote/rollback, automatic rollback (unit, and on a real server)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from package_models import matmul_model
from server_helpers import running_server

from zhisuan.errors import UserError
from zhisuan.serve.config import ServerConfig
from zhisuan.serve.repository import Repository
from zhisuan.serve.rollout import Rollout, RolloutClient, RolloutPolicy, parse_weights


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_default_routes_to_the_latest_version() -> None:
    r = Rollout("m", [3, 1, 2])
    assert r.weights == {3: 100.0} and {r.choose() for _ in range(20)} == {3}
    assert r.canaries == []


def test_weights_split_traffic_in_proportion() -> None:
    r = Rollout("m", [1, 2], rng=random.Random(0))
    r.set_weights({1: 80, 2: 20})
    counts = Counter(r.choose() for _ in range(10_000))
    assert abs(counts[2] / 10_000 - 0.2) < 0.02
    assert r.stable_weights == {2: 100.0} and r.canaries == [1]  # only version 1 gained traffic
    r.set_weights({1: 0, 2: 5})
    assert {r.choose() for _ in range(100)} == {2}  # weight 0 gets nothing


def test_stickiness_is_consistent_and_spreads_users() -> None:
    r = Rollout("m", [1, 2])
    r.set_weights({1: 50, 2: 50})
    per_user = {u: {r.choose(f"user-{u}") for _ in range(5)} for u in range(400)}
    assert all(len(v) == 1 for v in per_user.values())
    share = sum(v == {2} for v in per_user.values()) / 400
    assert 0.4 < share < 0.6
    other = Rollout("m", [1, 2])
    other.set_weights({1: 50, 2: 50})
    assert all(other.choose(f"user-{u}") in v for u, v in per_user.items())  # same on every server


def test_promote_and_rollback_keep_a_history() -> None:
    r = Rollout("m", [1, 2])
    r.promote(1)
    r.set_weights({1: 90, 2: 10})
    assert r.canaries == [2] and r.stable_weights == {1: 100.0}
    r.rollback()
    assert r.weights == {1: 100.0}
    r.set_weights({1: 50, 2: 50})
    r.promote(2)
    assert r.weights == r.stable_weights == {2: 100.0}
    assert [e.action for e in r.events] == ["promote", "set", "rollback", "set", "promote"]
    with pytest.raises(UserError, match="no loaded version 9"):
        r.promote(9)


def test_error_rate_over_the_window_rolls_the_canary_back() -> None:
    clock = Clock()
    r = Rollout("m", [1, 2], clock=clock)
    r.promote(1)
    r.set_weights({1: 50, 2: 50}, policy=RolloutPolicy(max_error_rate=0.2, window_s=10, min_requests=10))
    for _ in range(9):  # not judged before min_requests
        assert r.record(2, server_error=True, latency_ms=1.0) is None
    for _ in range(30):
        assert r.record(1, server_error=True, latency_ms=1.0) is None  # the stable version is never judged
    event = r.record(2, server_error=True, latency_ms=1.0)
    assert event is not None and event.action == "auto-rollback" and "error rate 1.000 > 0.2" in event.reason
    assert r.weights == {1: 100.0}
    assert r.record(2, server_error=True, latency_ms=1.0) is None  # no longer a canary


def test_old_errors_leave_the_window() -> None:
    clock = Clock()
    r = Rollout("m", [1, 2], clock=clock)
    r.promote(1)
    r.set_weights({1: 50, 2: 50}, policy=RolloutPolicy(max_error_rate=0.5, window_s=10, min_requests=10))
    for _ in range(8):
        r.record(2, server_error=True, latency_ms=1.0)
    clock.t += 11  # the errors are now older than the window
    for _ in range(12):
        assert r.record(2, server_error=False, latency_ms=1.0) is None
    assert r.weights == {1: 50.0, 2: 50.0}
    status = r.status()
    assert status["versions"]["2"]["window"]["requests"] == 12 and status["versions"]["2"]["server_errors_total"] == 8


def test_p99_latency_rolls_the_canary_back() -> None:
    r = Rollout("m", [1, 2], clock=Clock())
    r.promote(1)
    r.set_weights({1: 80, 2: 20}, policy=RolloutPolicy(max_p99_ms=50, min_requests=20))
    for i in range(19):
        assert r.record(2, server_error=False, latency_ms=10.0 if i < 17 else 400.0) is None
    event = r.record(2, server_error=False, latency_ms=10.0)
    assert event is not None and "p99" in event.reason and r.weights == {1: 100.0}
    status = r.status()
    assert status["events"][-1]["action"] == "auto-rollback"


def test_snapshot_restore_and_version_changes() -> None:
    r = Rollout("m", [1, 2])
    r.set_weights({1: 30, 2: 70}, policy=RolloutPolicy(max_error_rate=0.1))
    saved = json.loads(json.dumps(r.snapshot()))
    fresh = Rollout("m", [1, 2])
    fresh.restore(saved)
    assert fresh.weights == {1: 30.0, 2: 70.0} and fresh.policy.max_error_rate == 0.1
    fresh.set_versions([1], reason="v2 unloaded")
    assert fresh.weights == {1: 30.0} and {fresh.choose() for _ in range(10)} == {1}
    damaged = Rollout("m", [1, 2])
    for bad in ({"weights": "nonsense"}, [1, 2], "x", {"weights": {"1": True}, "stable_weights": {"1": 1}},
                {"weights": {"1": 1}, "stable_weights": {"1": 1}, "policy": 5}):
        with pytest.raises(UserError):
            damaged.restore(bad)  # type: ignore[arg-type]
    assert damaged.weights == {2: 100.0}


def test_parse_weights() -> None:
    assert parse_weights("1=80, 2=20") == {1: 80.0, 2: 20.0}
    assert parse_weights({"3": 1}) == {3: 1.0}
    for bad in ("1=80,1=20", "1:80", "a=1", "1=-5", "1=0", "", "1=inf", "01=5", "+1=5", " =5", "1=1e308"):
        with pytest.raises(UserError):
            parse_weights(bad)
    for bad_map in ({"1": True}, {"1": 1e308, "2": 1e308}, {"1": None}, {"1": "80"}, {"01": 1}, {"1.5": 1}):
        with pytest.raises(UserError):
            parse_weights(bad_map)  # type: ignore[arg-type]
    for bad_values in ({"window_s": True}, {"min_requests": 2.5}, {"max_p99_ms": "9"}, {"window_s": float("nan")}):
        with pytest.raises(UserError):
            RolloutPolicy.from_dict(bad_values)
    for bad_policy in ({"max_error_rate": 2}, {"max_p99_ms": 0}, {"window_s": 0}, {"min_requests": 0}):
        with pytest.raises(UserError):
            RolloutPolicy(**bad_policy)
    with pytest.raises(UserError, match="unknown rollout policy"):
        RolloutPolicy.from_dict({"max_latency": 3})


def test_client_sends_the_token_and_reports_server_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/nope"):
            return httpx.Response(404, json={"error": "unknown model 'nope'"})
        return httpx.Response(200, json={"model": "m", "weights": {"1": 100.0}})

    client = RolloutClient("127.0.0.1:9", token="s3cret-token", transport=httpx.MockTransport(handler))
    assert client.set("m", {1: 80, 2: 20}, policy={"max_error_rate": 0.1})["model"] == "m"
    assert json.loads(seen[-1].content) == {"weights": {"1": 80, "2": 20}, "policy": {"max_error_rate": 0.1}}
    assert seen[-1].headers["Authorization"] == "Bearer s3cret-token"
    assert str(seen[-1].url) == "http://127.0.0.1:9/v2/zhisuan/rollout/m"
    client.promote("m", 2)
    assert seen[-1].url.path == "/v2/zhisuan/rollout/m/promote" and json.loads(seen[-1].content) == {"version": 2}
    client.rollback("m")
    assert seen[-1].url.path == "/v2/zhisuan/rollout/m/rollback"
    with pytest.raises(UserError, match="404: unknown model 'nope'"):
        client.status("nope")
    monkeypatch.delenv("ZHISUAN_TOKEN", raising=False)
    with pytest.raises(UserError, match="set ZHISUAN_TOKEN"):
        RolloutClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler)).status("m")
    with pytest.raises(UserError, match="cannot reach"):
        RolloutClient("http://127.0.0.1:9", token="s3cret-token", timeout_s=2).status("m")


# --- a canary that rolls itself back, on the real server -------------------------------------
def reshape_canary_model(path: Path) -> Path:
    """x FP32 [batch, 4] -> y = x[:, :3] FP32 [batch, 3], but reshaped to [-1, 4] when max(x) >= 10:
    ONNX Runtime fails with status FAIL (the model computed an impossible shape), the model's fault,
    not the input's (an index out of range is the input's: see tests/serve/test_server_faults.py)."""
    const = [numpy_helper.from_array(np.array(v, dtype), n) for v, dtype, n in (
        (9.5, np.float32, "nine"), (3, np.int64, "three"), ([0], np.int64, "axis0"), ([-1], np.int64, "rows"),
        ([0], np.int64, "start"), ([3], np.int64, "end"), ([1], np.int64, "axis1"))]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            helper.make_node("Greater", ["m", "nine"], ["big"]),
            helper.make_node("Cast", ["big"], ["one"], to=TensorProto.INT64),
            helper.make_node("Add", ["one", "three"], ["k"]),
            helper.make_node("Unsqueeze", ["k", "axis0"], ["k1"]),
            helper.make_node("Concat", ["rows", "k1"], ["shape"], axis=0),
            helper.make_node("Slice", ["x", "start", "end", "axis1"], ["first3"]),
            helper.make_node("Reshape", ["first3", "shape"], ["y"]),
        ],
        "reshape_canary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        const,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_failing_canary_rolls_back_by_itself(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(matmul_model(tmp_path / "stable.onnx"), name="clf")
    repo.add(reshape_canary_model(tmp_path / "canary.onnx"), name="clf")  # v2: fails when max(x) >= 10
    token = "canary-token-123"
    config = ServerConfig(repo=tmp_path / "repo", token=token, telemetry=False, max_queue_delay_ms=1.0,
                          log_dir=tmp_path / "logs")
    auth = {"Authorization": f"Bearer {token}"}
    with running_server(config) as server:
        client = RolloutClient(server.url, token=token)
        client.promote("clf", 1)
        status = client.set("clf", {1: 50, 2: 50}, policy={"max_error_rate": 0.2, "window_s": 60, "min_requests": 8})
        assert status["versions"]["2"]["canary"]
        good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        bad = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [50, 2, 3, 4]}]}

        async def traffic(body: dict[str, Any], n: int) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
                return [await c.post("/v2/models/clf/infer", json=body) for _ in range(n)]

        small = asyncio.run(traffic(good, 10))  # both versions answer these
        assert {r.status_code for r in small} == {200}
        assert {r.json()["model_version"] for r in small} <= {"1", "2"}
        v2 = [r for r in small if r.json()["model_version"] == "2"]
        if v2:
            np.testing.assert_array_equal(v2[0].json()["outputs"][0]["data"], [1, 2, 3])
        replies = asyncio.run(traffic(bad, 80))
        codes = Counter(r.status_code for r in replies)
        assert 1 <= codes[500] <= 12 and codes[200] >= 60  # the canary failed, a few times only ...
        failure = next(r for r in replies if r.status_code == 500)
        assert "failed to run" in failure.json()["error"] and "clf v2" in failure.json()["error"]
        status = client.status("clf")
        assert status["weights"] == {"1": 100.0}  # ... and was rolled back by itself
        event = status["events"][-1]
        assert event["action"] == "auto-rollback" and "canary version 2" in event["reason"]
        after = asyncio.run(traffic(bad, 10))
        assert all(r.status_code == 200 and r.json()["model_version"] == "1" for r in after)
        metrics = httpx.get(server.url + "/metrics").text
        assert 'zhisuan_serve_rollout_auto_rollbacks_total{model="clf"} 1.0' in metrics
        assert 'zhisuan_serve_rollout_weight{model="clf",version="2"} 0.0' in metrics
        assert httpx.get(server.url + "/v2/zhisuan/rollout/clf", headers=auth).json()["versions"]["2"]["server_errors_total"] == codes[500]
