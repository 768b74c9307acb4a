"""Run onnxslim's own pipeline (constant folding, dead code, deduplication, its pattern fusions).

onnxslim is well kept and catches patterns our passes do not, so the default pipeline wraps it
rather than re-implementing every pattern. onnxslim reports no renames, so its name map step is
inferred: a tensor present before and after keeps its entry only if the same operator type still
produces it (a fusion that reuses a name for a different value would otherwise map wrongly).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


def _producer_ops(graph: Any) -> dict[str, str]:
    ops = {o: f"{n.domain}.{n.op_type}" for n in graph.node for o in n.output if o}
    ops.update({i.name: "<initializer>" for i in graph.initializer})
    return ops


@register_pass("onnxslim", summary="onnxslim.slim(): its folding, dedup and fusion patterns.", once=True)
def run(model: Any, ctx: PassContext) -> PassOutcome:
    try:
        import onnxslim
    except ImportError:
        return PassOutcome(model, notes=["onnxslim is not installed: skipped (pip install onnxslim)"])
    before_ops = _producer_ops(model.graph)
    nodes_before, bytes_before = len(model.graph.node), model.ByteSize()
    meta = {p.key: p.value for p in model.metadata_props}
    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(model)
    if slimmed is None:
        return PassOutcome(model, notes=["onnxslim returned nothing: skipped"])
    # onnxslim may drop metadata; put ours back.
    have = {p.key for p in slimmed.metadata_props}
    for key, value in meta.items():
        if key not in have:
            entry = slimmed.metadata_props.add()
            entry.key, entry.value = key, value
    after_ops = _producer_ops(slimmed.graph)
    changed_meaning = {n for n, op in after_ops.items() if n in before_ops and before_ops[n] != op
                       and not (before_ops[n].endswith(".Constant") and op == "<initializer>")}
    # Graph inputs and outputs keep their meaning by construction (and verification checks outputs).
    changed_meaning -= {v.name for v in (*model.graph.input, *model.graph.output)}
    outcome = PassOutcome(slimmed)
    # Renaming a tensor to a name that is not in the result drops it from the map.
    outcome.renamed.update({n: f"\0gone:{n}" for n in changed_meaning})
    removed = nodes_before - len(slimmed.graph.node)
    outcome.changed = removed != 0 or slimmed.ByteSize() != bytes_before
    if removed:
        outcome.counts["nodes_removed"] = removed
        outcome.details.append(f"onnxslim removed {removed} node(s)")
    return outcome
