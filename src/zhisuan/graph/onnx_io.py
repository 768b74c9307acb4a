"""Load and save ONNX models with clear errors, atomic writes and >2 GB support."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zhisuan._io import atomic_write
from zhisuan.errors import UserError

_PROTOBUF_LIMIT = 2**31 - 1


def load_model(path: str | Path, *, load_external_data: bool = True) -> Any:
    """``onnx.load`` with a one-line :class:`UserError` for a missing or unreadable file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # DecodeError, OSError, ... for a file that is not ONNX
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read ONNX model {path}: {first}") from None
    if not model.HasField("graph"):  # an empty file parses as an empty ModelProto
        raise UserError(f"cannot read ONNX model {path}: it holds no graph")
    return model


def save_model(model: Any, path: str | Path) -> Path:
    """Write ``model`` atomically; a model over 2 GB goes to external data beside it."""
    import onnx

    path = Path(path)
    if model.ByteSize() > _PROTOBUF_LIMIT:
        # External data cannot be renamed atomically with the graph; write it first, graph last.
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=path.name + ".data",
        )
        return path
    data = model.SerializeToString()
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
