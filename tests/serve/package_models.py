"""Tiny ONNX models built with onnx.helper for the package, repository and replica tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHT = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) / 10.0


def _save(graph: onnx.GraphProto, path: Path, **save_kwargs: object) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path), **save_kwargs)
    return path


def matmul_model(path: Path, *, batch: str | int = "batch", **save_kwargs: object) -> Path:
    """y = x @ WEIGHT: x float32 [batch, 4] -> y float32 [batch, 3]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(WEIGHT, "W")],
    )
    return _save(graph, path, **save_kwargs)


def image_model(path: Path) -> Path:
    """Per-channel sum of an NCHW float32 image: x [batch, 3, 4, 5] -> s [batch, 3]."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)],
        "image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 5])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


def mlp_model(path: Path, *, width: int = 256, layers: int = 24, seed: int = 0) -> Path:
    """A deep tanh MLP (x float32 [batch, width] -> y) that takes a few ms per call: work for replicas."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"t{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    return _save(graph, path)


def mlp_reference(x: np.ndarray, path: Path) -> np.ndarray:
    """The MLP computed in float64 numpy from the file's own weights."""
    model = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    y = x.astype(np.float64)
    for i in range(len(weights)):
        y = np.tanh(y @ weights[f"w{i}"])
    return y
