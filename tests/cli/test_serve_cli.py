"""`zhisuan serve`, `zhisuan serve logs` and `zhisuan rollout` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from cli_helpers import error_line, usage_error_line

TOKEN = "cli-test-token-42"
WEIGHT = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) / 10.0


def matmul_model(path: Path) -> Path:
    """y = x @ WEIGHT: x float32 [batch, 4] -> y float32 [batch, 3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHT, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ZHISUAN_TOKEN", "ZHISUAN_REPO", "ZHISUAN_SERVER")}
    env.update(extra)
    return env


def _zhisuan(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or _env())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zhisuan.serve.repository import Repository

    root = tmp_path_factory.mktemp("cli-serve")
    repository = Repository(root / "repo")
    for _ in range(2):
        repository.add(matmul_model(root / "mm.onnx"), name="mm")
    return root / "repo"


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhisuan", "serve", "--repo", str(repo), "--port", "0", "--json",
         "--max-delay-ms", "1", "--no-telemetry"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(ZHISUAN_TOKEN=TOKEN),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the ready line
    if not line:
        proc.kill()
        raise AssertionError(f"zhisuan serve did not start: {proc.stderr.read() if proc.stderr else ''}")
    ready = json.loads(line)
    assert ready["models"] == {"mm": ["1", "2"]} and ready["config"]["token"] == "set"
    yield ready["url"]
    proc.send_signal(signal.SIGTERM)  # a graceful stop: models closed, exit status 0
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""


def test_serve_infers_and_rollout_commands_drive_it(server: str, repo: Path) -> None:
    x = np.ones((2, 4), np.float32)
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    reply = httpx.post(f"{server}/v2/models/mm/infer", json=body, headers={"X-Request-ID": "cli-1"})
    assert reply.status_code == 200 and reply.json()["model_version"] == "2"
    np.testing.assert_allclose(np.array(reply.json()["outputs"][0]["data"]).reshape(2, 3), x @ WEIGHT, rtol=1e-6)
    env = _env(ZHISUAN_TOKEN=TOKEN)

    proc = _zhisuan("rollout", "set", "mm", "--weights", "1=80,2=20", "--max-error-rate", "0.05",
                    "--max-p99-ms", "250", "--window-s", "30", "--server", server, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["weights"] == {"1": 80.0, "2": 20.0}
    assert status["policy"] == {"max_error_rate": 0.05, "max_p99_ms": 250.0, "window_s": 30.0, "min_requests": 20}
    proc = _zhisuan("rollout", "status", "mm", "--server", server, env=env)
    assert proc.returncode == 0 and "rollout of mm" in proc.stdout and "max error rate 0.05" in proc.stdout
    proc = _zhisuan("rollout", "promote", "mm", "1", "--server", server, "--json", env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["weights"] == {"1": 100.0}
    proc = _zhisuan("rollout", "rollback", "mm", "--server", server, "--json", env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["weights"] == {"1": 100.0}
    for _ in range(3):
        assert httpx.post(f"{server}/v2/models/mm/infer", json=body).json()["model_version"] == "1"

    wrong = _zhisuan("rollout", "status", "mm", "--server", server, env=_env(ZHISUAN_TOKEN="not-the-token"))
    assert wrong.returncode == 1 and wrong.stderr.strip() == f"error: {server} answered 403: invalid bearer token"
    missing = _zhisuan("rollout", "status", "mm", "--server", server)
    assert missing.returncode == 1 and "set ZHISUAN_TOKEN" in missing.stderr
    unknown = _zhisuan("rollout", "promote", "mm", "7", "--server", server, env=env)
    assert unknown.returncode == 1 and "no loaded version 7" in unknown.stderr and "Traceback" not in unknown.stderr

    httpx.post(f"{server}/v2/models/mm/infer", content=b"{oops")
    proc = _zhisuan("serve", "logs", "--repo", str(repo), "--model", "mm", "--since", "10m", "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    assert "cli-1" in {r["request_id"] for r in records}
    proc = _zhisuan("serve", "logs", "--repo", str(repo), "--status", "4xx", "--limit", "1", "--json")
    (bad,) = json.loads(proc.stdout)["records"]
    assert bad["status"] == 400 and "malformed JSON" in bad["error"]
    proc = _zhisuan("serve", "logs", "--repo", str(repo), "--limit", "5")
    assert proc.returncode == 0 and "request(s)" in proc.stdout



def test_serve_errors_are_one_line(repo: Path, tmp_path: Path) -> None:
    token = _env(ZHISUAN_TOKEN=TOKEN)
    assert "--repo" in error_line(_zhisuan("serve"))
    assert "repository not found" in error_line(_zhisuan("serve", "--repo", str(tmp_path / "nowhere")))
    assert "no model 'nope'" in error_line(_zhisuan("serve", "--repo", str(repo), "--models", "nope", "--port", "0"))
    assert "'--replicas'" in usage_error_line(_zhisuan("serve", "--repo", str(repo), "--replicas", "0"))
    assert "unknown engine" in error_line(_zhisuan("serve", "--repo", str(repo), "--engine", "k8s"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert f"port {port} is in use" in error_line(_zhisuan("serve", "--repo", str(repo), "--port", str(port)))
    assert "bad --since" in error_line(_zhisuan("serve", "logs", "--repo", str(repo), "--since", "yesterday"))
    assert "no request logs" in error_line(_zhisuan("serve", "logs", "--repo", str(tmp_path)))
    assert "cannot reach the server" in error_line(
        _zhisuan("rollout", "status", "mm", "--server", "http://127.0.0.1:1", env=token))
    assert "bad weight" in error_line(_zhisuan("rollout", "set", "mm", "--weights", "1=80,2", env=token))
