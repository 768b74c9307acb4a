"""Remove nodes whose outputs nobody reads, and initializers / opset imports nothing uses."""

from __future__ import annotations

from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass

# Ops with effects beyond their outputs are kept even when unread.
_SIDE_EFFECTS = {"Print", "Assert"}


@register_pass("eliminate-dead", summary="Remove unused nodes, initializers and opset imports.")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    graph = model.graph
    outcome = PassOutcome(model)
    live = index.output_names(graph)
    keep = []
    for node in reversed(graph.node):
        if node.op_type in _SIDE_EFFECTS or any(o in live for o in node.output if o):
            keep.append(node)
            live.update(index.node_reads(node))
    kept_ids = {id(n) for n in keep}
    dead = [n for n in graph.node if id(n) not in kept_ids]
    if dead:
        index.remove_nodes(graph, dead)
        outcome.count("nodes_removed", len(dead))
        outcome.details.extend(f"removed unused {n.op_type} {n.name or n.output[0]!r}" for n in dead[:20])
    inputs = {v.name for v in graph.input}
    unused = [i for i in graph.initializer if i.name not in live and i.name not in inputs]
    if unused:
        names = {i.name for i in unused}
        kept = [i for i in graph.initializer if i.name not in names]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        outcome.count("initializers_removed", len(unused))
    # value_info of vanished tensors only bloats the file
    present = index.tensor_names(graph)
    stale = [v for v in graph.value_info if v.name not in present]
    if stale:
        kept_vi = [v for v in graph.value_info if v.name in present]
        del graph.value_info[:]
        graph.value_info.extend(kept_vi)
    used_domains = {n.domain for n in graph.node} | {""}
    for imp in list(model.opset_import):
        if imp.domain not in used_domains and imp.domain not in ("ai.onnx",) and not _used_in_functions(model, imp.domain):
            model.opset_import.remove(imp)
            outcome.count("opset_imports_removed")
    return outcome


def _used_in_functions(model: Any, domain: str) -> bool:
    return any(f.domain == domain or any(n.domain == domain for n in f.node) for f in model.functions)
