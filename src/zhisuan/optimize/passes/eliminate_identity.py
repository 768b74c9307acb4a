"""Remove no-op nodes: Identity, Dropout in inference, and Cast / Reshape / Transpose that do nothing.

The removed node's output name goes away and its readers read the input instead (name map:
output -> input). When the output is a graph output, the producer's output is renamed to it
instead, so graph output names never change.
"""

from __future__ import annotations

from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


def _is_noop(node: Any, inits: dict[str, Any], dtypes: dict[str, int]) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    op = node.op_type
    if op == "Identity":
        return True
    if op == "Dropout":
        # Only the data output may be used; inference mode (no training_mode input, or a false one).
        if len(node.output) > 1 and node.output[1]:
            return False
        if len(node.input) >= 3 and node.input[2]:
            t = inits.get(node.input[2])
            return t is not None and not bool(index.to_array(t))
        return True
    if op == "Cast":
        src = dtypes.get(node.input[0])
        return src is not None and src == index.attr(node, "to")
    if op == "Transpose":
        perm = index.attr(node, "perm")
        return perm is not None and list(perm) == list(range(len(perm)))
    return False


@register_pass("eliminate-identity", summary="Remove Identity, inference Dropout, same-type Cast, no-op Transpose.")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    graph = model.graph
    outcome = PassOutcome(model)
    inits = index.initializers(graph)
    dtypes = _elem_types(model)
    graph_inputs = {v.name for v in graph.input} | set(inits)
    outputs = index.output_names(graph)
    doomed = []
    for node in list(graph.node):
        if not node.input or not node.input[0] or not _is_noop(node, inits, dtypes):
            continue
        src, dst = node.input[0], node.output[0]
        if dst in outputs:
            # Keep the graph output's name: rename the producer's output to it.
            if src in graph_inputs or src in outputs:
                continue
            producer = next((n for n in graph.node if src in n.output and n is not node), None)
            if producer is None or any(n is producer for n in doomed):
                continue
            doomed.append(node)
            for i, o in enumerate(producer.output):
                if o == src:
                    producer.output[i] = dst
            index.rename_uses(graph, src, dst)
            outcome.renamed[src] = dst
        else:
            index.rename_uses(graph, dst, src)
            outcome.renamed[dst] = src
            doomed.append(node)
        outcome.count(f"{node.op_type}_removed")
        outcome.details.append(f"removed {node.op_type} {node.name or dst!r}")
    index.remove_nodes(graph, doomed)
    return outcome


def _elem_types(model: Any) -> dict[str, int]:
    graph = model.graph
    out = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    out.update({i.name: i.data_type for i in graph.initializer})
    for node in graph.node:
        if node.op_type == "Cast":
            out[node.output[0]] = index.attr(node, "to")
    return {k: v for k, v in out.items() if v}
