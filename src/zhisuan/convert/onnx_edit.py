"""Edits of an ONNX graph that conversion needs: opset version, a dynamic batch axis, shapes, names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zhisuan.errors import UserError

if TYPE_CHECKING:
    import onnx

__all__ = ["BATCH_DIM", "convert_opset", "infer_shapes", "make_batch_dynamic", "opset_of", "tensor_names"]

BATCH_DIM = "batch"


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def convert_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` at ``opset`` with ``onnx.version_converter``; tensor and node names are kept.

    >>> import onnx
    >>> from onnx import helper, TensorProto as T
    >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", T.FLOAT, [1])], [helper.make_tensor_value_info("y", T.FLOAT, [1])])
    >>> opset_of(convert_opset(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), 17))
    17
    """
    import onnx

    current = opset_of(model)
    if current == opset:
        return model
    if not 7 <= opset <= onnx.defs.onnx_opset_version():
        raise UserError(f"--opset {opset} is outside what onnx {onnx.__version__} knows (7..{onnx.defs.onnx_opset_version()})")
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises RuntimeError/ConvertError with C++ text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot convert the model from opset {current} to {opset}: {first}") from None
    if opset_of(converted) != opset:
        raise UserError(f"the onnx version converter left the model at opset {opset_of(converted)}, not {opset}")
    return converted


def make_batch_dynamic(model: onnx.ModelProto, dim_name: str = BATCH_DIM) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs and outputs have a named (dynamic) first axis.

    Intermediate shape annotations are dropped (they may carry the old batch size) and shapes are
    re-inferred. A size baked into the graph itself (a ``Reshape`` to ``[1, -1]``) is not
    rewritten: the numeric check at another batch size is what finds it.
    """
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {i.name for i in copy.graph.initializer}
    for value in (*copy.graph.input, *copy.graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 0:
            raise UserError(f"--dynamic-batch: {value.name!r} is a scalar (or has no shape) and has no batch axis")
        dims[0].Clear()
        dims[0].dim_param = dim_name
    del copy.graph.value_info[:]
    return infer_shapes(copy)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference`` with data propagation; a model it cannot process is returned as is."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # contrib (com.microsoft) operators have no schema in onnx: keep the model
        return model


def tensor_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name of the main graph: inputs, initializers and node outputs."""
    names = {v.name for v in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        names.update(o for o in node.output if o)
    return names
