"""ONNX graph plumbing for layerwise comparison: an index of producers and consumers, copies of a
model that expose intermediate tensors as outputs, and the "teacher-forced" copy that feeds each
layer the reference values of its inputs.

Only the top-level graph is indexed: tensors inside control-flow bodies (If, Loop, Scan) are
neither exposed nor teacher-forced.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Suffix of the graph inputs that carry reference values into the teacher-forced model.
REF_SUFFIX = "__zhisuan_ref"


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


def constant_array(proto: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(proto)


def _infer(model: Any) -> dict[str, Any]:
    """Value infos (name -> ValueInfoProto) that shape inference finds; empty when it fails."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
    except Exception:  # inference fails on some custom-domain ops; outputs then go without a type
        inferred = model
    graph = inferred.graph
    return {v.name: v for v in (*graph.value_info, *graph.output, *graph.input)}


def with_outputs(model: Any, names: Iterable[str]) -> Any:
    """A copy of ``model`` whose graph also outputs ``names`` (types from shape inference)."""
    from onnx import helper

    extended = copy.deepcopy(model)
    existing = {v.name for v in extended.graph.output}
    wanted = [n for n in dict.fromkeys(names) if n not in existing]
    if not wanted:
        return extended
    infos = _infer(model)
    for name in wanted:
        info = infos.get(name)
        if info is not None and info.type.tensor_type.elem_type:
            value = copy.deepcopy(info)
            value.type.tensor_type.ClearField("shape")  # inferred dims can be wrong for dynamic axes
            extended.graph.output.append(value)
        else:
            extended.graph.output.append(helper.make_empty_tensor_value_info(name))
    return extended


def teacher_forced(model: Any, index: GraphIndex, forced: Mapping[str, np.ndarray], outputs: Iterable[str]) -> Any:
    """A copy of ``model`` where every consumer of a tensor in ``forced`` reads a new graph input
    ``<name>__zhisuan_ref`` instead (fed with the reference value), and ``outputs`` are outputs.

    ``forced`` maps each tensor to an example value, which gives the new input's dtype and rank.
    Producers are kept, so each forced tensor's own (teacher-forced) value is still computed.
    """
    from onnx import helper

    tf = with_outputs(model, outputs)
    graph = tf.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in forced:
                node.input[i] = name + REF_SUFFIX
    # Graph outputs that are forced keep reading the producer's value: outputs are names, not edges.
    used = {name for node in graph.node for name in node.input}
    for name, example in forced.items():
        if name + REF_SUFFIX not in used:
            continue
        elem = helper.np_dtype_to_tensor_dtype(example.dtype)
        dims = [f"{name}{REF_SUFFIX}_d{i}" for i in range(example.ndim)]
        graph.input.append(helper.make_tensor_value_info(name + REF_SUFFIX, elem, dims))
    return tf
