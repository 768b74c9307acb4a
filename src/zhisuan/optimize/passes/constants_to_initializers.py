"""Move weights held in ``Constant`` nodes (paddle2onnx, PP-OCR) into graph initializers.

Tools that look for weights among initializers (quantizers, Conv+BN folding, size reports)
otherwise miss them silently. The initializer keeps the Constant's output name, so the name map
entry is the identity.
"""

from __future__ import annotations

from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


def constant_value(node: Any) -> Any | None:
    """The ``TensorProto`` a Constant node produces, or None for a sparse value."""
    import numpy as np
    from onnx import helper, numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name == "value_float":
            return numpy_helper.from_array(np.array(a.f, dtype=np.float32))
        if a.name == "value_floats":
            return numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32))
        if a.name == "value_int":
            return numpy_helper.from_array(np.array(a.i, dtype=np.int64))
        if a.name == "value_ints":
            return numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64))
        if a.name == "value_string":
            return helper.make_tensor("", helper.TensorProto.STRING, [], [a.s])
        if a.name == "value_strings":
            return helper.make_tensor("", helper.TensorProto.STRING, [len(a.strings)], list(a.strings))
    return None


@register_pass(
    "constants-to-initializers",
    summary="Move Constant-node weights into initializers (same tensor names).",
)
def run(model: Any, ctx: PassContext) -> PassOutcome:
    graph = model.graph
    outcome = PassOutcome(model)
    if model.ir_version < 4:  # initializers had to be graph inputs then; leave such models alone
        outcome.notes.append("IR version < 4: skipped")
        return outcome
    outputs = index.output_names(graph)
    moved = []
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs:
            continue
        tensor = constant_value(node)
        if tensor is None:
            continue
        init = graph.initializer.add()
        init.CopyFrom(tensor)
        init.name = node.output[0]
        moved.append(node)
        outcome.count("constants_moved")
        outcome.count("elements_moved", int(_numel(init)))
    if moved:
        index.remove_nodes(graph, moved)
        outcome.details.append(f"moved {len(moved)} Constant node(s) into initializers")
    return outcome


def _numel(tensor: Any) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n
