"""Open Inference Protocol v2 datatypes and their numpy dtypes.

A datatype is parsed once into a :class:`Datatype` (a ``StrEnum``: it still equals, prints and
serialises as its v2 name), where a request, a manifest or a processing step gives it.

>>> v2_datatype("float32"), numpy_dtype("INT8")
(<Datatype.FP32: 'FP32'>, dtype('int8'))
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from zhisuan.errors import UserError

__all__ = [
    "FLOAT_TYPES",
    "INT_TYPES",
    "NUMERIC_TYPES",
    "NUMPY_TO_V2",
    "V2_TO_NUMPY",
    "Datatype",
    "numpy_dtype",
    "v2_datatype",
]


class Datatype(enum.StrEnum):
    """An Open Inference Protocol v2 tensor datatype."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BF16 = "BF16"
    BYTES = "BYTES"


#: numpy dtype name <-> Open Inference Protocol v2 datatype.
NUMPY_TO_V2: dict[str, Datatype] = {
    "bool": Datatype.BOOL,
    "uint8": Datatype.UINT8,
    "uint16": Datatype.UINT16,
    "uint32": Datatype.UINT32,
    "uint64": Datatype.UINT64,
    "int8": Datatype.INT8,
    "int16": Datatype.INT16,
    "int32": Datatype.INT32,
    "int64": Datatype.INT64,
    "float16": Datatype.FP16,
    "float32": Datatype.FP32,
    "float64": Datatype.FP64,
    "bfloat16": Datatype.BF16,
    "object": Datatype.BYTES,
    "bytes": Datatype.BYTES,
}
V2_TO_NUMPY: dict[Datatype, str] = {v2: np_name for np_name, v2 in NUMPY_TO_V2.items() if np_name != "bytes"}

FLOAT_TYPES = (Datatype.FP16, Datatype.FP32, Datatype.FP64, Datatype.BF16)
INT_TYPES = (
    Datatype.UINT8, Datatype.UINT16, Datatype.UINT32, Datatype.UINT64,
    Datatype.INT8, Datatype.INT16, Datatype.INT32, Datatype.INT64,
)
NUMERIC_TYPES = (*FLOAT_TYPES, *INT_TYPES, Datatype.BOOL)


def v2_datatype(dtype: str | np.dtype[Any]) -> Datatype:
    """The v2 datatype of a numpy dtype (or numpy dtype name); a v2 name passes through.

    >>> [str(d) for d in (v2_datatype("float32"), v2_datatype(np.dtype("int64")), v2_datatype("FP16"))]
    ['FP32', 'INT64', 'FP16']
    """
    if isinstance(dtype, str):
        if dtype in V2_TO_NUMPY:
            return Datatype(dtype)
        if dtype == "bfloat16":
            return Datatype.BF16
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise UserError(f"unknown datatype {dtype!r}; use e.g. float32, int64, uint8 (or FP32, INT64, UINT8)") from None
    if dtype.kind in ("S", "U", "O"):
        return Datatype.BYTES
    if dtype.name not in NUMPY_TO_V2:
        raise UserError(f"the datatype {dtype.name!r} has no Open Inference Protocol v2 equivalent")
    return NUMPY_TO_V2[dtype.name]


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype (``BYTES`` -> ``object``) or of a numpy dtype name."""
    v2 = v2_datatype(datatype)
    if v2 is Datatype.BF16:
        raise UserError("BF16 tensors have no numpy dtype; declare them FP32 and cast in the model")
    return np.dtype(V2_TO_NUMPY[v2])
