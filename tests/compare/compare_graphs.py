"""Tiny ONNX graphs for the compare tests, built with onnx.helper (imported by the tests)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# conv1 -> relu1 -> conv2 -> relu2 -> conv3: (node name, op, inputs, output)
NODES = [
    ("conv1", "Conv", ["x", "w1", "b1"], "conv1_out"),
    ("relu1", "Relu", ["conv1_out"], "relu1_out"),
    ("conv2", "Conv", ["relu1_out", "w2", "b2"], "conv2_out"),
    ("relu2", "Relu", ["conv2_out"], "relu2_out"),
    ("conv3", "Conv", ["relu2_out", "w3"], "y"),
]


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "b1": rng.standard_normal(8).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.15,
        "b2": rng.standard_normal(8).astype(np.float32) * 0.1,
        "w3": rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.15,
    }


def convnet(
    *,
    params: dict[str, np.ndarray] | None = None,
    rename: dict[str, str] | None = None,
    nodes: list[tuple[str, str, list[str], str]] | None = None,
) -> onnx.ModelProto:
    """The conv net above; ``rename`` renames tensors (node names stay)."""
    params = params if params is not None else weights()
    rename = rename or {}

    def r(name: str) -> str:
        return rename.get(name, name)

    graph_nodes = [
        helper.make_node(op, [r(i) for i in ins], [r(out)], name=name, **({"pads": [1, 1, 1, 1]} if op == "Conv" else {}))
        for name, op, ins, out in (nodes or NODES)
    ]
    graph = helper.make_graph(
        graph_nodes, "convnet",
        [helper.make_tensor_value_info(r("x"), TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info(r("y"), TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in params.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
