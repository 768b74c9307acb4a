"""Drop ``value_info`` (intermediate shape annotations) from the graph and its subgraphs.

Runtimes (ONNX Runtime, OpenVINO, TensorRT) infer these shapes themselves when they load the
model, so they only cost file size; ``onnx.shape_inference.infer_shapes`` restores them for
viewers such as Netron. Graph input and output types are kept, also those of subgraphs (the
bodies of ``If``/``Loop``/``Scan``), whose signatures are part of the operator's contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


def _subgraphs(graph: Any) -> Iterator[Any]:
    from onnx import AttributeProto

    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield attr.g
            elif attr.type == AttributeProto.GRAPHS:
                yield from attr.graphs


@register_pass("strip-value-info", summary="Drop intermediate shape annotations (runtimes re-infer them).")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    outcome = PassOutcome(model)
    top = len(model.graph.value_info)
    if top:
        outcome.count("value_info_removed", top)
        del model.graph.value_info[:]
    nested = 0
    pending = list(_subgraphs(model.graph))
    while pending:
        graph = pending.pop()
        nested += len(graph.value_info)
        del graph.value_info[:]
        pending.extend(_subgraphs(graph))
    if nested:
        outcome.count("subgraph_value_info_removed", nested)
    return outcome
