"""Pattern matching shared by the activation fusions: constants, Clip bounds and hard-sigmoid chains.

Not a pass (the leading underscore keeps it out of discovery). The matchers read the graph as it is
when :class:`Graph` is built; a pass that edits nodes marks them used so that no later match in the
same run touches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zhisuan.graph import index

#: Floating-point constants a hard activation's scale, offset and bounds may have.
_FLOAT = (np.float16, np.float32, np.float64)

#: How far a scale may be from the reciprocal of the Clip bound it undoes (float32 1/6 is 1.5e-8 off).
_RTOL = 1e-6


def ranks(model: Any) -> dict[str, int]:
    """Tensor -> rank from ONNX shape inference (empty for models too large to infer or on failure)."""
    import onnx

    if model.ByteSize() > 1_500_000_000:
        return {}
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        return {}
    return {v.name: len(v.type.tensor_type.shape.dim) for v in (*g.input, *g.value_info, *g.output)
            if v.type.tensor_type.HasField("shape")}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= _RTOL * max(abs(a), abs(b), 1.0)


@dataclass(frozen=True)
class HardSigmoidMatch:
    """``max(0, min(1, alpha * x + beta))`` computed by ``nodes`` (in graph order), the last writing the value."""

    x: str
    alpha: float
    beta: float
    nodes: tuple[Any, ...]


class Graph:
    """Producers, consumers and constant values (initializers and Constant nodes) of a model's graph."""

    def __init__(self, model: Any) -> None:
        self.model = model
        graph = model.graph
        self.producers = index.producers(graph)
        self.users = index.consumers(graph)
        self.outputs = index.output_names(graph)
        self.constants = index.GraphIndex.build(model).constants
        self.used: set[int] = set()
        self._ranks: dict[str, int] | None = None

    def rank(self, tensor: str) -> int | None:
        if self._ranks is None:
            self._ranks = ranks(self.model)
        return self._ranks.get(tensor)

    def producer(self, tensor: str, *ops: str) -> Any:
        """The standard-domain node of type ``ops`` writing ``tensor`` that no match has used yet."""
        node = self.producers.get(tensor)
        if node is None or node.op_type not in ops or node.domain not in ("", "ai.onnx") or id(node) in self.used:
            return None
        return node

    def private(self, tensor: str) -> bool:
        """Read by one node and not a graph output: the value may vanish into a fused node."""
        return tensor not in self.outputs and len(self.users.get(tensor, [])) == 1

    def scalar(self, name: str, like: str) -> float | None:
        """The value of a one-element float constant that broadcasts against ``like`` without changing
        its shape (rank at most 1, or at most ``like``'s rank where shape inference knows it)."""
        tensor = self.constants.get(name)
        if tensor is None:
            return None
        value = index.to_array(tensor)
        if value.size != 1 or value.dtype.type not in _FLOAT:
            return None
        if value.ndim > 1:
            rank = self.rank(like)
            if rank is None or rank < value.ndim:
                return None
        return float(value.reshape(-1)[0])

    def operand(self, node: Any) -> tuple[str, float] | None:
        """(data input, constant) of a binary node with one scalar-constant input."""
        if len(node.input) != 2:
            return None
        a, b = node.input
        for data, const in ((a, b), (b, a)) if node.op_type in ("Add", "Mul") else ((a, b),):
            value = self.scalar(const, data)
            if value is not None and const != data:
                return data, value
        return None

    def scale(self, node: Any) -> tuple[str, float] | None:
        """(data input, factor) of ``Mul(x, c)`` or ``Div(x, c)`` (factor ``1 / c``)."""
        found = self.operand(node)
        if found is None:
            return None
        data, value = found
        if node.op_type == "Div":
            return (data, 1.0 / value) if value != 0 else None
        return data, value

    def clip_bounds(self, clip: Any) -> tuple[float, float] | None:
        """(min, max) of a Clip with constant bounds (attributes before opset 11, inputs since)."""
        if index.default_opset(self.model) < 11:
            lo, hi = index.attr(clip, "min"), index.attr(clip, "max")
            return None if lo is None or hi is None else (float(lo), float(hi))
        if len(clip.input) < 3 or not clip.input[1] or not clip.input[2]:
            return None
        lo, hi = self.scalar(clip.input[1], clip.input[0]), self.scalar(clip.input[2], clip.input[0])
        return None if lo is None or hi is None else (lo, hi)

    def hard_sigmoid(self, tensor: str) -> HardSigmoidMatch | None:
        """The hard sigmoid that computes ``tensor``, in any of the forms exporters write:

        * ``HardSigmoid(x)``;
        * ``clip(a * x + b, 0, 1)`` (``x / d`` for ``a * x``; PaddlePaddle's ``hardsigmoid``);
        * ``clip(x + b, 0, k) / k`` (or ``* (1 / k)``; the ``relu6(x + 3) / 6`` of MobileNetV3).
        """
        node = self.producer(tensor, "HardSigmoid")
        if node is not None:
            return HardSigmoidMatch(node.input[0], float(index.attr(node, "alpha", 0.2)),
                                    float(index.attr(node, "beta", 0.5)), (node,))
        clip = self.producer(tensor, "Clip")
        if clip is not None:
            if self.clip_bounds(clip) != (0.0, 1.0):
                return None
            add = self.producer(clip.input[0], "Add") if self.private(clip.input[0]) else None
            shifted = self.operand(add) if add is not None else None
            if shifted is None:
                return None
            inner, beta = shifted
            mul = self.producer(inner, "Mul", "Div") if self.private(inner) else None
            scaled = self.scale(mul) if mul is not None else None
            if scaled is None:
                return HardSigmoidMatch(inner, 1.0, beta, (add, clip))
            return HardSigmoidMatch(scaled[0], scaled[1], beta, (mul, add, clip))
        last = self.producer(tensor, "Mul", "Div")
        scaled = self.scale(last) if last is not None else None
        if scaled is None:
            return None
        clipped, factor = scaled
        clip = self.producer(clipped, "Clip") if self.private(clipped) else None
        bounds = self.clip_bounds(clip) if clip is not None else None
        if bounds is None or bounds[0] != 0.0 or bounds[1] <= 0 or not close(factor * bounds[1], 1.0):
            return None
        add = self.producer(clip.input[0], "Add") if self.private(clip.input[0]) else None
        shifted = self.operand(add) if add is not None else None
        if shifted is None:
            return None
        x, offset = shifted
        return HardSigmoidMatch(x, factor, offset * factor, (add, clip, last))
