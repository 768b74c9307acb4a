"""Read an ONNX file's input/output signature without running it."""

from __future__ import annotations

from pathlib import Path

from zhisuan.errors import UserError
from zhisuan.runtime.base import TensorSpec


def onnx_signature(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise UserError(f"cannot read ONNX model {path}: {exc}") from None
    initializers = {init.name for init in model.graph.initializer}

    def spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
        tensor_type = value_info.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else "unknown"
        dims: list[int | str | None] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return TensorSpec(value_info.name, dtype, tuple(dims))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs
