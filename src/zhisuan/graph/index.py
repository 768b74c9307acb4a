"""Lookups over an ONNX graph: who produces and who consumes each tensor, its initializers,
attributes and names, and the small edits graph passes make (rename a tensor's uses, remove nodes).

Two views, for two kinds of user:

* the functions read a ``GraphProto`` as it is now, so a pass that edits the graph calls them
  again after each edit; a node's subgraphs (If, Loop, Scan bodies) count as consumers of the outer
  names they reference, so a pass never removes or renames a tensor a body still reads;
* :class:`GraphIndex` is a snapshot of a model's top-level graph by node position, with the values
  of ``Constant`` nodes alongside the initializers, for analyses that read and never edit the
  graph (the layerwise comparison); a node's inputs are exactly its ``input`` list there, since
  those are the edges an analysis rewires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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
            rename_in_subgraph(sub, old, new)
    for value in graph.output:
        if value.name == old:
            value.name = new


def rename_in_subgraph(graph: Any, old: str, new: str) -> None:
    """``rename_uses`` inside a subgraph body, unless the body defines ``old`` itself."""
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


@dataclass
class GraphIndex:
    """Who produces and who consumes each tensor of a model's top-level graph."""

    model: Any
    producer: dict[str, int] = field(default_factory=dict)  # tensor -> node index
    consumers: dict[str, list[int]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)  # tensor -> TensorProto (initializer or Constant)
    inputs: list[str] = field(default_factory=list)  # graph inputs that are not initializers
    outputs: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, model: Any) -> GraphIndex:
        graph = model.graph
        index = cls(model)
        for init in graph.initializer:
            index.constants[init.name] = init
        index.inputs = [v.name for v in graph.input if v.name not in index.constants]
        index.outputs = [v.name for v in graph.output]
        for i, node in enumerate(graph.node):
            for name in node.input:
                if name:
                    index.consumers.setdefault(name, []).append(i)
            for name in node.output:
                if name:
                    index.producer[name] = i
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                value = _constant_value(node)
                if value is not None:
                    index.constants[node.output[0]] = value
        return index

    @property
    def nodes(self) -> Any:
        return self.model.graph.node

    def tensor_names(self) -> set[str]:
        return {*self.inputs, *self.producer, *self.constants}

    def topo_position(self, tensor: str) -> int:
        """Position of the tensor's producer in node order (-1 for inputs and initializers)."""
        return self.producer.get(tensor, -1)


def _constant_value(node: Any) -> Any:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
            value = helper.get_attribute_value(attr)
            dtype = np.float32 if "float" in attr.name else np.int64
            return numpy_helper.from_array(np.asarray(value, dtype=dtype), node.output[0])
    return None
