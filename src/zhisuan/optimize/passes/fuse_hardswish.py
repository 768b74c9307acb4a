"""Write the hard swishes that exporters spell out (dozens per PaddlePaddle model) as one ``HardSwish``.

Forms: ``x * clip(x + 3, 0, 6) / 6`` (paddle2onnx below opset 14; ``* (1/6)`` for ``/ 6`` too) and
``x * s`` where ``s`` is any hard sigmoid of ``x`` with alpha 1/6 and beta 0.5 (``HardSigmoid`` node,
``clip(x/6 + 0.5, 0, 1)``, ``clip(x + 3, 0, 6) / 6``). ``HardSwish`` is standard ONNX from opset 14;
on older opsets the first form (any offset and bound) becomes ``x * HardSigmoid(x)`` instead, two
nodes for four. Equal up to float rounding; the last node's output keeps its name and value, and a
new ``HardSigmoid`` output gets a fresh name (it holds a value the graph did not have before).
"""

from __future__ import annotations

from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.passes._patterns import Graph, HardSigmoidMatch, close
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass

#: HardSwish(x) = x * HardSigmoid(x) with these parameters, and the opset that has it.
_ALPHA, _BETA, _OPSET = 1.0 / 6.0, 0.5, 14


def _swish_of_sigmoid(graph: Graph, mul: Any) -> tuple[str, tuple[Any, ...]] | None:
    """``x * hard_sigmoid(x)``: (x, nodes of the hard sigmoid)."""
    if len(mul.input) != 2:
        return None
    for x, gate in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        match = graph.hard_sigmoid(gate) if graph.private(gate) else None
        if match is not None and match.x == x and close(match.alpha, _ALPHA) and close(match.beta, _BETA):
            return x, match.nodes
    return None


def _scaled_product(graph: Graph, last: Any) -> HardSigmoidMatch | None:
    """``(x * clip(x + b, 0, k)) / k``: the hard sigmoid of x with its own nodes, then the product's Mul
    and ``last`` (``nodes`` = add, clip, product, last)."""
    scaled = graph.scale(last)
    if scaled is None:
        return None
    product_out, factor = scaled
    product = graph.producer(product_out, "Mul") if graph.private(product_out) else None
    if product is None or len(product.input) != 2:
        return None
    for x, clipped in ((product.input[0], product.input[1]), (product.input[1], product.input[0])):
        clip = graph.producer(clipped, "Clip") if graph.private(clipped) else None
        bounds = graph.clip_bounds(clip) if clip is not None else None
        if bounds is None or bounds[0] != 0.0 or bounds[1] <= 0 or not close(factor * bounds[1], 1.0):
            continue
        add = graph.producer(clip.input[0], "Add") if graph.private(clip.input[0]) else None
        shifted = graph.operand(add) if add is not None else None
        if shifted is None or shifted[0] != x:
            continue
        return HardSigmoidMatch(x, factor, shifted[1] * factor, (add, clip, product, last))
    return None


@register_pass("fuse-hardswish", summary="x * clip(x + 3, 0, 6) / 6 and x * HardSigmoid(x) forms -> HardSwish.")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    from onnx import helper

    outcome = PassOutcome(model)
    graph = Graph(model)
    has_op = index.default_opset(model) >= _OPSET
    taken = index.tensor_names(model.graph)
    doomed = []
    for node in model.graph.node:
        if node.op_type not in ("Mul", "Div") or id(node) in graph.used:
            continue
        out = node.output[0]
        swish = _swish_of_sigmoid(graph, node) if node.op_type == "Mul" and has_op else None
        if swish is not None:
            x, removed = swish
        else:
            chain = _scaled_product(graph, node)
            if chain is None or any(id(n) in graph.used for n in chain.nodes):
                continue
            x, removed = chain.x, chain.nodes[:-1]
            if not (has_op and close(chain.alpha, _ALPHA) and close(chain.beta, _BETA)):
                # no HardSwish for these parameters or this opset: x * HardSigmoid(x), the Clip's slot
                add, clip, product = removed
                gate = index.unique_name(taken, f"{out}_hardsigmoid")
                clip.CopyFrom(helper.make_node("HardSigmoid", [x], [gate], name=clip.name or gate,
                                               alpha=chain.alpha, beta=chain.beta))
                node.CopyFrom(helper.make_node("Mul", [x, gate], [out], name=node.name or out))
                graph.used.update(id(n) for n in chain.nodes)
                doomed.extend([add, product])
                outcome.count("hardsigmoid_products")
                outcome.details.append(f"x * clip(x + b, 0, k) / k -> x * HardSigmoid(x) at {out!r}")
                continue
        if any(id(n) in graph.used for n in removed):
            continue
        graph.used.update(id(n) for n in (*removed, node))
        spelled = "/".join(n.op_type for n in (*removed, node))
        node.CopyFrom(helper.make_node("HardSwish", [x], [out], name=node.name or out))
        doomed.extend(removed)
        outcome.count("hardswishes_fused")
        outcome.details.append(f"{spelled} -> HardSwish {out!r}")
    index.remove_nodes(model.graph, doomed)
    return outcome
