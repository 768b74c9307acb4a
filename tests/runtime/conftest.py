"""Tiny ONNX graphs built with onnx.helper, each with the same computation in numpy and torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from zhisuan.runtime.base import TensorSpec, TorchModel

OPSET = 17


@dataclass(frozen=True)
class Graph:
    """One test model: the ONNX file, its torch twin, a numpy reference and sample inputs."""

    name: str
    path: Path
    torch_model: TorchModel
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    feeds: dict[str, np.ndarray]


def _save(tmp: Path, name: str, graph: onnx.GraphProto) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


class _Mlp(torch.nn.Module):
    def __init__(self, w: np.ndarray, b: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.from_numpy(w.copy()))
        self.b = torch.nn.Parameter(torch.from_numpy(b.copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w + self.b)


class _TwoHeads(_Mlp):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = x @ self.w + self.b
        return logits, torch.softmax(logits, dim=-1)


class _Embed(torch.nn.Module):
    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.from_numpy(table.copy()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids].mean(dim=1)


def _weights(seed: int, k: int = 4, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def mlp_graph(tmp: Path, *, dynamic: bool) -> Graph:
    """y = Relu(x @ W + B); x is [batch, 4] with a named dynamic batch, or fixed [3, 4]."""
    w, b = _weights(0)
    batch: int | str = "batch" if dynamic else 3
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    name = "mlp_dynamic" if dynamic else "mlp_static"
    specs = (TensorSpec("x", "float32", (batch, 4)),)
    x = np.random.default_rng(1).standard_normal((5 if dynamic else 3, 4)).astype(np.float32)
    return Graph(
        name, _save(tmp, name, graph), TorchModel(_Mlp(w, b), ("x",), ("y",), specs),
        lambda f: {"y": np.maximum(f["x"] @ w + b, 0)}, {"x": x},
    )


def two_output_graph(tmp: Path) -> Graph:
    """logits = x @ W + B and probs = Softmax(logits): two outputs from one input."""
    w, b = _weights(2)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "two_heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 8]),
        ],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )

    def reference(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = f["x"] @ w + b
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return {"logits": logits, "probs": e / e.sum(axis=-1, keepdims=True)}

    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    specs = (TensorSpec("x", "float32", ("batch", 4)),)
    return Graph(
        "two_outputs", _save(tmp, "two_outputs", graph),
        TorchModel(_TwoHeads(w, b), ("x",), ("logits", "probs"), specs), reference, {"x": x},
    )


def int64_graph(tmp: Path) -> Graph:
    """out = ReduceMean(Gather(table, ids), axis=1): int64 token ids in, float32 out."""
    table = np.random.default_rng(4).standard_normal((100, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb"], ["out"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 6])],
        [numpy_helper.from_array(table, "table")],
    )
    ids = np.random.default_rng(5).integers(0, 100, size=(2, 7), dtype=np.int64)
    specs = (TensorSpec("ids", "int64", ("batch", "seq")),)
    return Graph(
        "int64_ids", _save(tmp, "int64_ids", graph), TorchModel(_Embed(table), ("ids",), ("out",), specs),
        lambda f: {"out": table[f["ids"]].mean(axis=1)}, {"ids": ids},
    )


@pytest.fixture(scope="session")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Graph]:
    tmp = tmp_path_factory.mktemp("graphs")
    built = [mlp_graph(tmp, dynamic=False), mlp_graph(tmp, dynamic=True), two_output_graph(tmp), int64_graph(tmp)]
    return {g.name: g for g in built}


@pytest.fixture(scope="session")
def mlp(graphs: dict[str, Graph]) -> Graph:
    return graphs["mlp_dynamic"]
