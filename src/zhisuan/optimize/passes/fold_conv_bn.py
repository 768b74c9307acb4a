"""Fold an inference BatchNormalization into the Conv that feeds it.

``W' = W * s`` and ``b' = (b - mean) * s + beta`` with ``s = scale / sqrt(var + eps)`` per output
channel. The Conv then writes the BatchNormalization's output tensor, so the name map keeps the BN
output (identity) and drops the pre-BN Conv output, whose value no longer exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


@register_pass("fold-conv-bn", summary="Fold BatchNormalization into the preceding Conv's weights and bias.")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    from onnx import numpy_helper

    graph = model.graph
    outcome = PassOutcome(model)
    inits = index.initializers(graph)
    users = index.consumers(graph)
    outputs = index.output_names(graph)
    producers = index.producers(graph)
    taken = index.tensor_names(graph)
    doomed = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if index.attr(bn, "training_mode", 0) or any(o for o in bn.output[1:]):
            continue
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        conv_out = conv.output[0]
        if conv_out in outputs or len(users.get(conv_out, [])) != 1:
            continue
        params = [inits.get(n) for n in bn.input[1:5]]
        weight = inits.get(conv.input[1])
        bias = inits.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        if weight is None or any(p is None for p in params) or (len(conv.input) > 2 and conv.input[2] and bias is None):
            continue
        scale, beta, mean, var = (index.to_array(p).astype(np.float64) for p in params)
        w = index.to_array(weight)
        if not np.issubdtype(w.dtype, np.floating):
            continue
        s = scale / np.sqrt(var + float(index.attr(bn, "epsilon", 1e-5)))
        b = index.to_array(bias).astype(np.float64) if bias is not None else np.zeros(w.shape[0])
        new_w = (w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b - mean) * s + beta).astype(w.dtype)
        w_name = index.unique_name(taken, f"{conv.input[1]}_bnfold")
        b_name = index.unique_name(taken, f"{bn.output[0]}_bias_bnfold")
        graph.initializer.extend([numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)])
        conv.input[1] = w_name
        if len(conv.input) > 2:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        conv.output[0] = bn.output[0]
        doomed.append(bn)
        outcome.count("batchnorms_folded")
        outcome.details.append(f"folded {bn.name or bn.output[0]!r} into {conv.name or conv_out!r}")
    index.remove_nodes(graph, doomed)
    return outcome
