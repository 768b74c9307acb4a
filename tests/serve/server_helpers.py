"""Helpers of the server tests: tiny ONNX models, a real server on a free loopback port, OpenAPI checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zhisuan.serve.config import ServerConfig

SPEC = Path(__file__).parent / "data" / "rest_predict_v2.yaml"
TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def lookup_model(path: Path) -> Path:
    """Same signature as package_models.matmul_model (x FP32 [batch, 4] -> y FP32 [batch, 3]), but
    y[i] = TABLE[int(max(x[i]))]: it fails at run time (Gather out of bounds) when max(x[i]) >= 10.
    A canary that breaks on some inputs."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=0),
            helper.make_node("Cast", ["m"], ["idx"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "idx"], ["y"], axis=0),
        ],
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(TABLE, "table")],
    )
    return _save(graph, path)


def strings_model(path: Path) -> Path:
    """BYTES in and out: s STRING [batch] -> t = s (Identity), and n INT64 [batch] = 1 per row."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["s"], ["t"]),
            helper.make_node("Shape", ["s"], ["n"]),
        ],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [
            helper.make_tensor_value_info("t", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [1]),
        ],
    )
    return _save(graph, path)


@dataclass
class RunningServer:
    url: str
    app: Any
    server: Any
    thread: threading.Thread

    @property
    def hub(self) -> Any:
        return self.app.state.hub

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")


@contextmanager
def running_server(
    config: ServerConfig, *, start_timeout_s: float = 60.0, executor_factory: Any = None
) -> Iterator[RunningServer]:
    """The real app under uvicorn on a free loopback port (port 0), in a thread; stopped on exit.

    ``executor_factory`` replaces the real executors (e.g. a :class:`zhisuan.serve.testing.MockEngine`).
    """
    import uvicorn

    from zhisuan.serve.server import bind_socket, create_app

    app = create_app(config) if executor_factory is None else create_app(config, executor_factory=executor_factory)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{sock.getsockname()[1]}", app, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@cache
def _spec() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


def validate(component: str, instance: Any) -> None:
    """Validate ``instance`` against ``#/components/schemas/<component>`` of the published OIP v2 spec."""
    from openapi_schema_validator import OAS30Validator

    schema = {"$ref": f"#/components/schemas/{component}", "components": _spec()["components"]}
    OAS30Validator(schema).validate(instance)


def with_binary_inlined(header: dict[str, Any], binary: bytes) -> dict[str, Any]:
    """A binary-extension response header with each binary output decoded into ``data`` (row-major),
    i.e. the plain JSON response it stands for, which the published schema can check."""
    from zhisuan.serve.protocol import DATATYPES, decode_bytes_tensor

    doc = {**header, "outputs": []}
    offset = 0
    for out in header["outputs"]:
        out = dict(out)
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = binary[offset : offset + size]
            offset += size
            count = int(np.prod(out["shape"]))
            if out["datatype"] == "BYTES":
                values = [v.decode() for v in decode_bytes_tensor(chunk, count)]
            else:
                values = np.frombuffer(chunk, dtype=DATATYPES[out["datatype"]]).tolist()
            out["data"] = values
        doc["outputs"].append(out)
    assert offset == len(binary), "binary outputs do not account for every byte"
    return doc
