"""Drop ``value_info`` (intermediate shape annotations) from the graph.

Runtimes (ONNX Runtime, OpenVINO, TensorRT) infer these shapes themselves when they load the
model, so they only cost file size; ``onnx.shape_inference.infer_shapes`` restores them for
viewers such as Netron. Graph input and output types are kept.
"""

from __future__ import annotations

from typing import Any

from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


@register_pass("strip-value-info", summary="Drop intermediate shape annotations (runtimes re-infer them).")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    graph = model.graph
    outcome = PassOutcome(model)
    if len(graph.value_info):
        outcome.count("value_info_removed", len(graph.value_info))
        del graph.value_info[:]
    return outcome
