"""Read an ONNX model's input/output signature without running it: the one reader every backend uses.

ONNX Runtime reads its signature from its session, but OpenVINO renames or drops dim names and
TensorRT and the null backend read none, so they take it from here and show the same
:class:`~zhisuan.runtime.base.TensorSpec` list as ONNX Runtime.

>>> from onnx import TensorProto, helper
>>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
>>> inputs, outputs = onnx_signature(helper.make_model(graph))
>>> inputs
[TensorSpec(name='x', dtype='float32', shape=('batch', 4))]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.runtime.base import UNKNOWN_DTYPE, TensorSpec


def onnx_signature(model: str | Path | bytes | Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX model, in graph order.

    ``model`` is a file path (external data is not read), serialized bytes or an
    ``onnx.ModelProto``. Dims are ints when fixed, the dim name when named, else ``None``.
    """
    proto = _proto(model)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [_spec(value) for value in proto.graph.input if value.name not in initializers]
    return inputs, [_spec(value) for value in proto.graph.output]


def _proto(model: str | Path | bytes | Any) -> Any:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        try:
            return onnx.load_from_string(model)
        except Exception as exc:  # onnx raises DecodeError for bytes that are not a ModelProto
            raise UserError(f"cannot read the model bytes as ONNX: {exc}") from None
    if not isinstance(model, str | Path):
        raise UserError(f"an ONNX model is a file path, bytes or an onnx.ModelProto, not {type(model).__name__}")
    if not Path(model).is_file():
        raise UserError(f"model file not found: {model}")
    try:
        return onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise UserError(f"cannot read ONNX model {model}: {exc}") from None


def _spec(value: Any) -> TensorSpec:
    from onnx import helper

    tensor_type = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else UNKNOWN_DTYPE
    dims = tuple(
        int(dim.dim_value) if dim.HasField("dim_value") else (dim.dim_param or None) for dim in tensor_type.shape.dim
    )
    return TensorSpec(value.name, dtype, dims)
