"""Turn ``MatMul(A, B) + C`` into one ``Gemm`` when A is 2-D and B, C are constants.

Gemm is standard ONNX (every backend has it); ranks come from ONNX shape inference, so a MatMul
on a 3-D activation (transformers) is left alone. The MatMul output disappears from the name map;
the Gemm writes the Add's output.
"""

from __future__ import annotations

from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.passes._patterns import ranks as shape_ranks
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


@register_pass("matmul-add-to-gemm", summary="Fuse 2-D MatMul + constant Add into Gemm.")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    graph = model.graph
    outcome = PassOutcome(model)
    inits = index.initializers(graph)
    candidates = [n for n in graph.node if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and n.input[1] in inits]
    if not candidates:
        return outcome
    ranks = shape_ranks(model)
    users = index.consumers(graph)
    outputs = index.output_names(graph)
    doomed = []
    for mm in candidates:
        a, b, out = mm.input[0], mm.input[1], mm.output[0]
        if ranks.get(a) != 2 or len(inits[b].dims) != 2 or out in outputs or len(users.get(out, [])) != 1:
            continue
        add = users[out][0]
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
            continue
        bias = add.input[1] if add.input[0] == out else add.input[0]
        if bias not in inits or ranks.get(add.output[0]) != 2:
            continue
        n = inits[b].dims[1]
        bdims = list(inits[bias].dims)
        if bdims not in ([n], [1, n], [1], [], [1, 1]):
            continue
        from onnx import helper

        gemm = helper.make_node("Gemm", [a, b, bias], [add.output[0]], name=(add.name or mm.name or out) + "_gemm")
        add.CopyFrom(gemm)
        doomed.append(mm)
        outcome.count("gemms_created")
        outcome.details.append(f"MatMul {mm.name or out!r} + Add -> Gemm")
    index.remove_nodes(graph, doomed)
    return outcome
