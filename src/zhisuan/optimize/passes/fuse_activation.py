"""Fuse Conv + activation into ONNX Runtime's ``com.microsoft.FusedConv``.

Only ONNX Runtime has this operator (target ``onnxruntime``); the result then needs ORT's contrib
ops. ORT applies the same fusion itself when a session is created with the default optimization
level, so this pass shrinks the file's node count rather than ORT's latency; OpenVINO and
TensorRT fuse activations on their own, and standard ONNX has no fused Conv+activation operator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass

_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "Clip", "HardSigmoid"}


def _params(act: Any, inits: dict[str, Any]) -> list[float] | None:
    op = act.op_type
    if op == "LeakyRelu":
        return [float(index.attr(act, "alpha", 0.01))]
    if op == "HardSigmoid":
        return [float(index.attr(act, "alpha", 0.2)), float(index.attr(act, "beta", 0.5))]
    if op == "Clip":
        lo, hi = index.attr(act, "min"), index.attr(act, "max")
        if len(act.input) > 1:  # opset 11+: bounds are inputs and must be constants
            bounds = []
            for i, default in ((1, -np.inf), (2, np.inf)):
                name = act.input[i] if len(act.input) > i else ""
                if not name:
                    bounds.append(default)
                elif name in inits:
                    bounds.append(float(index.to_array(inits[name])))
                else:
                    return None
            lo, hi = bounds
        lo = -3.4028234663852886e38 if lo is None or lo == -np.inf else lo
        hi = 3.4028234663852886e38 if hi is None or hi == np.inf else hi
        return [float(lo), float(hi)]
    return []


@register_pass(
    "fuse-activation", summary="Conv + Relu/Clip/Sigmoid/... -> com.microsoft.FusedConv (ONNX Runtime only).",
    targets=("onnxruntime",),
)
def run(model: Any, ctx: PassContext) -> PassOutcome:
    from onnx import helper

    graph = model.graph
    outcome = PassOutcome(model)
    inits = index.initializers(graph)
    users = index.consumers(graph)
    outputs = index.output_names(graph)
    producers = index.producers(graph)
    doomed = []
    for act in graph.node:
        if act.op_type not in _ACTIVATIONS or act.domain not in ("", "ai.onnx"):
            continue
        conv = producers.get(act.input[0])
        if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        if conv.output[0] in outputs or len(users.get(conv.output[0], [])) != 1:
            continue
        params = _params(act, inits)
        if params is None:
            continue
        fused = helper.make_node(
            "FusedConv", list(conv.input), [act.output[0]], name=(conv.name or act.output[0]) + "_fused",
            domain="com.microsoft", activation=act.op_type,
        )
        fused.attribute.extend(a for a in conv.attribute)
        if params:
            fused.attribute.append(helper.make_attribute("activation_params", params))
        conv.CopyFrom(fused)
        doomed.append(act)
        outcome.count(f"Conv+{act.op_type}")
    if doomed:
        index.remove_nodes(graph, doomed)
        index.ensure_domain(model, "com.microsoft", 1)
        outcome.notes.append("result needs ONNX Runtime contrib ops (com.microsoft.FusedConv)")
        outcome.details.append(f"fused {len(doomed)} activation(s) into FusedConv")
    return outcome
