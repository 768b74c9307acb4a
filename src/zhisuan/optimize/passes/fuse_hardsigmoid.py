"""Write the hard sigmoids that exporters spell out as Mul/Div, Add and Clip as one ``HardSigmoid``.

PaddlePaddle exports ``hardsigmoid`` as ``clip(x / 6 + 0.5, 0, 1)`` and MobileNetV3-style code
writes ``relu6(x + 3) / 6``; both are ``HardSigmoid(alpha, beta)`` (standard ONNX since opset 6,
on every backend), equal up to float rounding (the fused op computes ``alpha * x + beta`` once).
The last node's output keeps its name and value; the intermediate tensors disappear.
"""

from __future__ import annotations

from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.passes._patterns import Graph
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


@register_pass("fuse-hardsigmoid", summary="clip(x/6 + 0.5, 0, 1) and clip(x + 3, 0, 6)/6 forms -> HardSigmoid.")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    from onnx import helper

    outcome = PassOutcome(model)
    graph = Graph(model)
    doomed = []
    for node in model.graph.node:
        if node.op_type not in ("Clip", "Mul", "Div") or id(node) in graph.used:
            continue
        match = graph.hard_sigmoid(node.output[0])
        if match is None or len(match.nodes) < 2 or any(id(n) in graph.used for n in match.nodes):
            continue
        graph.used.update(id(n) for n in match.nodes)
        last = match.nodes[-1]
        fused = helper.make_node("HardSigmoid", [match.x], [last.output[0]], name=last.name or last.output[0],
                                 alpha=match.alpha, beta=match.beta)
        last.CopyFrom(fused)
        doomed.extend(match.nodes[:-1])
        outcome.count("hardsigmoids_fused")
        outcome.details.append(f"{'/'.join(n.op_type for n in match.nodes[:-1])}/... -> HardSigmoid "
                               f"{fused.name!r} (alpha {match.alpha:.6g}, beta {match.beta:.6g})")
    index.remove_nodes(model.graph, doomed)
    return outcome
