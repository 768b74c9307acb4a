"""ONNX graph plumbing for layerwise comparison: copies of a model that expose intermediate tensors
as outputs, and the "teacher-forced" copy that feeds each layer the reference values of its inputs.

Only the top-level graph is indexed (:class:`zhisuan.graph.index.GraphIndex`): tensors inside control-flow bodies (If, Loop, Scan) are
neither exposed nor teacher-forced.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from zhisuan.graph.index import GraphIndex

#: Suffix of the graph inputs that carry reference values into the teacher-forced model.
REF_SUFFIX = "__zhisuan_ref"


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
