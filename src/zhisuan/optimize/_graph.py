"""Small helpers over ``onnx.GraphProto`` shared by the passes (top-level graph; subgraphs are
treated as opaque consumers of the outer names they reference)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def subgraphs(node: Any) -> Iterator[Any]:
    from onnx import AttributeProto

    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def subgraph_refs(graph: Any) -> set[str]:
    """Names a (sub)graph reads that it does not define itself (outer-scope references)."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in subgraphs(node):
            used |= subgraph_refs(sub)
        defined.update(node.output)
    used.update(v.name for v in graph.output)
    return used - defined


def node_reads(node: Any) -> list[str]:
    """Every top-level name ``node`` reads: its inputs and its subgraphs' outer references."""
    names = [n for n in node.input if n]
    for sub in subgraphs(node):
        names.extend(sorted(subgraph_refs(sub)))
    return names


def consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node_reads(node)):
            out.setdefault(name, []).append(node)
    return out


def producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output if out}


def tensor_names(graph: Any) -> set[str]:
    """Every value name of the top-level graph: inputs, initializers and node outputs."""
    names = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    names.update(o for node in graph.node for o in node.output if o)
    return names


def output_names(graph: Any) -> set[str]:
    return {v.name for v in graph.output}


def initializers(graph: Any) -> dict[str, Any]:
    return {i.name: i for i in graph.initializer}


def to_array(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def rename_uses(graph: Any, old: str, new: str) -> None:
    """Make every reader of ``old`` (nodes, subgraph references, graph outputs) read ``new``."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in subgraphs(node):
            _rename_in_subgraph(sub, old, new)
    for value in graph.output:
        if value.name == old:
            value.name = new


def _rename_in_subgraph(graph: Any, old: str, new: str) -> None:
    # A subgraph that defines ``old`` itself shadows the outer name: leave it alone.
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    defined.update(o for n in graph.node for o in n.output)
    if old in defined:
        return
    rename_uses(graph, old, new)


def unique_name(taken: set[str], base: str) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def default_opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def ensure_domain(model: Any, domain: str, version: int = 1) -> None:
    if not any(imp.domain == domain for imp in model.opset_import):
        imp = model.opset_import.add()
        imp.domain, imp.version = domain, version


def attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def remove_nodes(graph: Any, doomed: list[Any]) -> None:
    """Remove ``doomed`` nodes (by identity), keeping the order of the rest."""
    ids = {id(n) for n in doomed}
    keep = [n for n in graph.node if id(n) not in ids]
    if len(keep) == len(graph.node):
        return
    copies = [type(n)() for n in keep]
    for c, n in zip(copies, keep, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
