"""Analytic FLOPs and bytes per ONNX node, from the graph with shapes inferred for concrete inputs.

Conventions (a multiply-add is 2 FLOPs):

========================  ===========================================================
MatMul                    2 x prod(output) x K  ([M,K]x[K,N] -> 2MKN)
Gemm                      2 x M x N x K, + M x N when C is given
Conv                      2 x prod(output) x (C_in / group) x prod(kernel), + prod(output) with a bias
ConvTranspose             2 x prod(input) x (C_out / group) x prod(kernel), + prod(output) with a bias
elementwise, activations  1 per output element (Add, Mul, Relu, Sigmoid, Erf, Clip, ...)
Softmax / LogSoftmax      3 per element (exp, sum, divide)
LayerNormalization        8 per element; BatchNormalization 2; InstanceNorm 8
pooling                   prod(output) x prod(kernel); GlobalAverage/MaxPool prod(input)
Reduce*                   prod(input)
anything else             0 (data movement: Reshape, Transpose, Gather, Concat, ...)
========================  ===========================================================

Bytes are every input (activations and weights) plus every output, at their dtype's size, read
or written once: a lower bound on memory traffic, the usual roofline convention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.results import Record

if TYPE_CHECKING:
    import onnx

__all__ = ["NodeCost", "node_costs"]

_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Not", "Xor", "Mod",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Exp",
    "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Erf", "Clip", "Gelu", "Softplus", "Softsign", "Mish", "Sin",
    "Cos", "Floor", "Ceil", "Round", "Sign", "QuickGelu", "FastGelu", "BiasGelu",
}
_PER_ELEMENT = {"Softmax": 3, "LogSoftmax": 3, "LayerNormalization": 8, "SimplifiedLayerNormalization": 6,
                "SkipLayerNormalization": 9, "BatchNormalization": 2, "InstanceNormalization": 8,
                "GroupNormalization": 8}
_POOL = {"MaxPool", "AveragePool", "LpPool"}
_GLOBAL_POOL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}


@dataclass(frozen=True)
class NodeCost(Record):
    """One node's analytic work: FLOPs, bytes moved, and the shapes they came from."""

    name: str
    op_type: str
    flops: int
    bytes: int
    weight_bytes: int
    output_shapes: tuple[tuple[int, ...], ...]

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte; None for a node that moves no bytes."""
        return self.flops / self.bytes if self.bytes else None

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        shapes = fields.pop("output_shapes")
        return {**fields, "intensity": self.intensity, "output_shapes": shapes}


def node_costs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[NodeCost]:
    """FLOPs and bytes of every node of ``model``'s main graph for inputs shaped like ``feeds``.

    Shapes come from ``onnx.shape_inference`` on a copy whose inputs are fixed to ``feeds``'
    shapes; tensors it leaves unknown are read from one ONNX Runtime run that exposes them.
    """
    infos = _tensor_infos(model, feeds)
    weights = {i.name for i in model.graph.initializer}
    costs = []
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        ins = [infos.get(n) for n in node.input if n]
        outs = [infos.get(n) for n in node.output if n]
        io_bytes = sum(_nbytes(i) for i in (*ins, *outs) if i is not None)
        weight_bytes = sum(_nbytes(infos[n]) for n in node.input if n in weights and n in infos)
        flops = _flops(node, [i[0] if i else None for i in ins], [o[0] if o else None for o in outs])
        costs.append(NodeCost(name, node.op_type, int(flops), int(io_bytes), int(weight_bytes),
                              tuple(tuple(o[0]) for o in outs if o is not None)))
    return costs


def _nbytes(info: tuple[tuple[int, ...], int]) -> int:
    shape, itemsize = info
    return math.prod(shape) * itemsize


def _flops(node: Any, ins: list[tuple[int, ...] | None], outs: list[tuple[int, ...] | None]) -> int:
    op = node.op_type
    out = outs[0] if outs else None
    if out is None:
        return 0
    n_out = math.prod(out)
    attrs = {a.name: a for a in node.attribute}
    if op == "MatMul" and ins[0] is not None:
        return 2 * n_out * ins[0][-1]
    if op == "Gemm" and ins[0] is not None:
        trans_a = attrs["transA"].i if "transA" in attrs else 0
        k = ins[0][0] if trans_a else ins[0][-1]
        return 2 * n_out * k + (n_out if len(ins) > 2 else 0)
    if op in ("Conv", "FusedConv") and len(ins) > 1 and ins[1] is not None:
        # weight [C_out, C_in/group, *kernel]
        per_output = math.prod(ins[1][1:])
        return 2 * n_out * per_output + (n_out if len(ins) > 2 and ins[2] is not None else 0)
    if op == "ConvTranspose" and ins[0] is not None and ins[1] is not None:
        # weight [C_in, C_out/group, *kernel]: each input element feeds C_out/group x kernel outputs
        bias = n_out if len(ins) > 2 and ins[2] is not None else 0
        return 2 * math.prod(ins[0]) * math.prod(ins[1][1:]) + bias
    if op in _ELEMENTWISE:
        return n_out
    if op in _PER_ELEMENT:
        return _PER_ELEMENT[op] * n_out
    if op in _POOL and "kernel_shape" in attrs:
        return n_out * math.prod(attrs["kernel_shape"].ints)
    if (op in _GLOBAL_POOL or op.startswith("Reduce")) and ins and ins[0] is not None:
        return math.prod(ins[0])
    return 0


def _tensor_infos(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], int]]:
    """Tensor name -> (concrete shape, bytes per element) for every tensor whose shape is known."""
    import onnx
    from onnx import helper

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in feeds:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, feeds[value.name].shape, strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    del fixed.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # contrib operators (com.microsoft) have no schema: fall back to ORT below
        inferred = fixed
    infos: dict[str, tuple[tuple[int, ...], int]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        info = _info(value)
        if info is not None:
            infos[value.name] = info
    for init in model.graph.initializer:
        infos[init.name] = (tuple(init.dims), helper.tensor_dtype_to_np_dtype(init.data_type).itemsize)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    infos[node.output[0]] = (tuple(attr.t.dims), helper.tensor_dtype_to_np_dtype(attr.t.data_type).itemsize)
    missing = [o for node in model.graph.node for o in node.output if o and o not in infos]
    if missing:
        infos.update(_shapes_from_ort(model, feeds, missing))
    return infos


def _info(value: Any) -> tuple[tuple[int, ...], int] | None:
    from onnx import helper

    tensor = value.type.tensor_type
    if not tensor.elem_type or not tensor.HasField("shape"):
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    if any(d < 0 for d in dims):
        return None
    return dims, helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize


def _shapes_from_ort(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], names: list[str]
) -> dict[str, tuple[tuple[int, ...], int]]:
    """Run the model once with ``names`` exposed as outputs and read their shapes and dtypes."""
    from zhisuan.errors import UserError
    from zhisuan.runtime import load_runtime

    try:
        with load_runtime(model, "onnxruntime", graph_optimization_level="disable", expose_outputs=names) as rt:
            values = rt.run(dict(feeds), names)
    except UserError:  # shapes stay unknown: those nodes get 0 FLOPs and partial bytes
        return {}
    return {n: (tuple(values[n].shape), np.asarray(values[n]).dtype.itemsize) for n in names}
