"""Tiny models for the LoadGen, LLM and ``zhisuan bench`` tests, built in the test with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def mlp_onnx(path: Path, *, inputs: int = 256, hidden: int = 1024, outputs: int = 10, batch: int | str = "batch") -> Path:
    """x [batch, inputs] -> MatMul/Relu/MatMul/Relu/MatMul -> y [batch, outputs]: ~0.1 ms a sample.

    Big enough that the model, not Python or LoadGen, sets the pace; small enough for tests.
    """
    rng = np.random.default_rng(0)
    weights = [
        (rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)).astype(np.float32),
        (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
        (rng.standard_normal((hidden, outputs)) / np.sqrt(hidden)).astype(np.float32),
    ]
    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, outputs])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def mlp_reference(path: Path, x: np.ndarray) -> np.ndarray:
    """The MLP's output computed with numpy from the file's weights."""
    model = onnx.load(str(path))
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    h = np.maximum(x @ w["w0"], 0)
    h = np.maximum(h @ w["w1"], 0)
    return h @ w["w2"]
