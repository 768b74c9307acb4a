"""Evaluate nodes whose inputs are all initializers and store their outputs as initializers.

The output keeps its name (name map: identity). Folding that would grow the file (Expand, Tile,
ConstantOfShape into large tensors) is skipped: an output bigger than the inputs it frees (those
no other node reads) and over :data:`MAX_GROWTH_BYTES` stays a node. Shape/Size of tensors whose shapes are fully static
(from ONNX shape inference) are folded too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass

MAX_GROWTH_BYTES = 64 * 1024
_NEVER = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "Constant", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "Optional",
    "QuantizeLinear", "DequantizeLinear",  # keep QDQ pairs visible to runtimes
}


def _evaluate(node: Any, values: dict[str, np.ndarray], opsets: list[Any]) -> list[np.ndarray] | None:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), None) for n in names]
    outputs = [helper.make_value_info(o, helper.TypeProto()) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=opsets)
    try:
        result = ReferenceEvaluator(model).run(None, {n: values[n] for n in names})
    except Exception:  # an op the reference lacks, or bad data: leave the node alone
        return None
    return [np.asarray(r) for r in result]


def _static_shapes(model: Any) -> dict[str, list[int]]:
    import onnx

    if model.ByteSize() > 1_500_000_000:
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    g = inferred.graph
    shapes = {}
    for v in (*g.input, *g.value_info, *g.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[v.name] = [d.dim_value for d in t.shape.dim]
    return shapes


@register_pass("fold-constants", summary="Precompute nodes whose inputs are all constants (and static Shape/Size).")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    from onnx import numpy_helper

    graph = model.graph
    outcome = PassOutcome(model)
    inits = index.initializers(graph)
    outputs = index.output_names(graph)
    opsets = list(model.opset_import)
    values: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] | None = None
    folded = []
    users = index.consumers(graph)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER or any(o in outputs for o in node.output):
            continue
        if any(True for _ in index.subgraphs(node)):
            continue
        result: list[np.ndarray] | None = None
        if node.op_type in ("Shape", "Size") and node.input[0] not in inits and node.input[0] not in values:
            if shapes is None:
                shapes = _static_shapes(model)
            shape = shapes.get(node.input[0])
            if shape is None:
                continue
            if node.op_type == "Size":
                result = [np.array(int(np.prod(shape)), dtype=np.int64)]
            else:
                start, end = index.attr(node, "start", 0), index.attr(node, "end", None)
                result = [np.array(shape[start:end], dtype=np.int64)]
        else:
            names = [n for n in node.input if n]
            if not all(n in inits or n in values for n in names):
                continue
            for n in names:
                if n not in values:
                    values[n] = index.to_array(inits[n])
            # Only inputs read by this node alone disappear; a shared weight (tied embeddings) stays.
            in_bytes = sum(values[n].nbytes for n in set(names) if len(users.get(n, [])) == 1)
            result = _evaluate(node, values, opsets)
            if result is None:
                continue
            out_bytes = sum(r.nbytes for r in result)
            if out_bytes > max(in_bytes, MAX_GROWTH_BYTES):
                continue
        produced = [o for o in node.output if o]
        if len(result) < len(produced):
            continue
        for name, arr in zip(node.output, result, strict=False):
            if not name:
                continue
            values[name] = arr
            init = numpy_helper.from_array(arr, name)
            graph.initializer.append(init)
            inits[name] = init
        folded.append(node)
        outcome.count(f"{node.op_type}_folded")
    if folded:
        index.remove_nodes(graph, folded)
        outcome.details.append(f"folded {len(folded)} node(s) into initializers")
    return outcome
