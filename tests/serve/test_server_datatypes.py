"""Every v2 datatype through every engine of a real server: in-process, replicas, Ray Serve.

The model echoes one input of each datatype, so what comes back must be what went in, value for
value and datatype for datatype. The replicas and Ray carry batches in their own framing
(:func:`zhisuan.serve.workers.frame`); a tensor it changes on the way (BYTES as the ``repr`` of
``bytes``, say) shows here and not with one in-process replica.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from server_helpers import running_server

from zhisuan.serve.config import ServerConfig
from zhisuan.serve.datatypes import Datatype
from zhisuan.serve.protocol import DATATYPES, HEADER_LENGTH, decode_bytes_tensor, encode_bytes_tensor
from zhisuan.serve.repository import Repository

# v2 datatype -> (its ONNX element type, values that probe its range)
CASES: dict[str, tuple[int, list[Any]]] = {
    "BOOL": (TensorProto.BOOL, [True, False, True]),
    **{name.upper(): (getattr(TensorProto, name.upper()), [int(np.iinfo(name).min), int(np.iinfo(name).max), 7])
       for name in (f"{kind}{bits}" for kind in ("uint", "int") for bits in (8, 16, 32, 64))},
    "FP16": (TensorProto.FLOAT16, [-65504.0, 0.5, 1.25]),
    "FP32": (TensorProto.FLOAT, [-3.5, 1e-30, 3.0e38]),
    "FP64": (TensorProto.DOUBLE, [-1e300, 0.1, 2.5e-300]),
    "BYTES": (TensorProto.STRING, ["hello", "", "z\u00e9\u4e2d"]),
}


def echo_model(path: Path) -> Path:
    """One input ``in_<DT>`` [batch] per datatype, echoed as ``out_<DT>`` (Identity)."""
    names = [dt.lower() for dt in CASES]
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in names],
        "echo_every_datatype",
        [helper.make_tensor_value_info(f"in_{n}", t, ["batch"]) for n, (t, _) in zip(names, CASES.values(), strict=True)],
        [helper.make_tensor_value_info(f"out_{n}", t, ["batch"]) for n, (t, _) in zip(names, CASES.values(), strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _arrays() -> dict[str, np.ndarray]:
    out = {}
    for dt, (_, values) in CASES.items():
        out[dt] = (np.array([v.encode() for v in values], dtype=object) if dt == "BYTES"
                   else np.array(values, dtype=DATATYPES[Datatype(dt)]))
    return out


def _json_request() -> dict[str, Any]:
    # JSON numbers: UINT64 above 2**63 cannot be told from a float there, so the JSON form stays below
    data = {dt: [min(v, 2**63 - 1) for v in values] if dt == "UINT64" else values for dt, (_, values) in CASES.items()}
    return {"inputs": [{"name": f"in_{dt.lower()}", "shape": [len(v)], "datatype": dt, "data": v}
                       for dt, v in data.items()]}


def _binary_request() -> tuple[bytes, dict[str, str]]:
    arrays = _arrays()
    blobs = [encode_bytes_tensor(a) if dt == "BYTES" else a.tobytes() for dt, a in arrays.items()]
    header = {
        "inputs": [{"name": f"in_{dt.lower()}", "shape": list(a.shape), "datatype": dt,
                    "parameters": {"binary_data_size": len(blob)}}
                   for (dt, a), blob in zip(arrays.items(), blobs, strict=True)],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


def _check_json_echo(reply: httpx.Response) -> set[str]:
    """The datatypes that came back equal to what was sent (any difference fails here)."""
    assert reply.status_code == 200, reply.text
    got = {o["name"]: o for o in reply.json()["outputs"]}
    for entry in _json_request()["inputs"]:
        dt, values = entry["datatype"], entry["data"]
        out = got[entry["name"].replace("in_", "out_")]
        assert out["datatype"] == dt and out["shape"] == [len(values)], out
        if dt in ("FP16", "FP32"):  # JSON carries the float64 nearest to the value
            np.testing.assert_array_equal(np.array(out["data"], dtype=DATATYPES[Datatype(dt)]),
                                          np.array(values, dtype=DATATYPES[Datatype(dt)]))
        else:
            assert out["data"] == values, (dt, out["data"])
    return {entry["datatype"] for entry in _json_request()["inputs"]}


def _check_binary_echo(reply: httpx.Response) -> set[str]:
    assert reply.status_code == 200, reply.text
    size = int(reply.headers[HEADER_LENGTH])
    header, binary = json.loads(reply.content[:size]), reply.content[size:]
    got, offset = {}, 0
    for out in header["outputs"]:
        n = out["parameters"]["binary_data_size"]
        got[out["name"]] = (out["datatype"], out["shape"], binary[offset : offset + n])
        offset += n
    for dt, array in _arrays().items():
        datatype, shape, blob = got[f"out_{dt.lower()}"]
        assert datatype == dt and shape == list(array.shape)
        if dt == "BYTES":
            assert decode_bytes_tensor(blob, array.size).tolist() == array.tolist()
        else:
            assert blob == array.tobytes(), dt  # bit for bit
    return {dt for dt in _arrays() if f"out_{dt.lower()}" in got}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datatypes")
    repository = Repository(root / "repo")
    repository.add(echo_model(root / "echo.onnx"), name="echo")
    return root / "repo"


@pytest.fixture
def ray_env() -> Iterator[None]:
    pytest.importorskip("ray.serve")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "RAY_ADDRESS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster (FIELD-NOTES)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _serve_and_echo(repo: Path, **options: Any) -> list[set[str]]:
    """Each reply's echoed datatypes: three JSON and three binary requests."""
    config = ServerConfig(repo=repo, threads=1, telemetry=False, request_log=False, max_queue_delay_ms=1.0,
                          **options)
    with running_server(config, start_timeout_s=180) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        body, headers = _binary_request()
        echoed = []
        for _ in range(3):  # each replica, most likely
            echoed.append(_check_json_echo(c.post("/v2/models/echo/infer", json=_json_request())))
            echoed.append(_check_binary_echo(c.post("/v2/models/echo/infer", content=body, headers=headers)))
    return echoed


def test_every_datatype_in_process(repo: Path) -> None:
    assert _serve_and_echo(repo, replicas=1) == [set(CASES)] * 6


def test_every_datatype_through_replicas(repo: Path) -> None:
    assert _serve_and_echo(repo, replicas=2) == [set(CASES)] * 6


@pytest.mark.slow
def test_every_datatype_through_ray(repo: Path, ray_env: None) -> None:
    # A fresh process: a Ray cluster that other tests of this session started and shut down leaves
    # Serve handles to dead actors behind in this one.
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_serve_and_echo, args=(repo,),
                                                         kwargs={"replicas": 1, "engine": "ray"})
    child.start()
    child.join(timeout=300)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, f"the Ray echo check failed in its process (exit {child.exitcode})"
