"""Read an ONNX file's input/output signature without running it."""

from __future__ import annotations

from pathlib import Path

from zhisuan.errors import UserError
from zhisuan.runtime.base import TensorSpec
from zhisuan.runtime.feeds import onnx_specs


def onnx_signature(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a bad file
        raise UserError(f"cannot read ONNX model {path}: {exc}") from None
    specs = onnx_specs(model)
    outputs = {value.name for value in model.graph.output}
    inputs = [spec for name, spec in specs.items() if name not in outputs]
    return inputs, [specs[value.name] for value in model.graph.output if value.name in specs]
