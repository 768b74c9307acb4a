"""Open Inference Protocol v2 datatypes and their numpy dtypes.

>>> v2_datatype("float32"), numpy_dtype("INT8")
('FP32', dtype('int8'))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zhisuan.errors import UserError

__all__ = ["FLOAT_TYPES", "INT_TYPES", "NUMERIC_TYPES", "NUMPY_TO_V2", "V2_TO_NUMPY", "numpy_dtype", "v2_datatype"]

#: numpy dtype name <-> Open Inference Protocol v2 datatype.
NUMPY_TO_V2: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
    "object": "BYTES",
    "bytes": "BYTES",
}
V2_TO_NUMPY: dict[str, str] = {v2: np_name for np_name, v2 in NUMPY_TO_V2.items() if np_name != "bytes"}

FLOAT_TYPES = ("FP16", "FP32", "FP64", "BF16")
INT_TYPES = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
NUMERIC_TYPES = (*FLOAT_TYPES, *INT_TYPES, "BOOL")


def v2_datatype(dtype: str | np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype (or numpy dtype name); a v2 name passes through.

    >>> v2_datatype("float32"), v2_datatype(np.dtype("int64")), v2_datatype("FP16")
    ('FP32', 'INT64', 'FP16')
    """
    if isinstance(dtype, str):
        if dtype in V2_TO_NUMPY:
            return dtype
        if dtype == "bfloat16":
            return "BF16"
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise UserError(f"unknown datatype {dtype!r}; use e.g. float32, int64, uint8 (or FP32, INT64, UINT8)") from None
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    if dtype.name not in NUMPY_TO_V2:
        raise UserError(f"the datatype {dtype.name!r} has no Open Inference Protocol v2 equivalent")
    return NUMPY_TO_V2[dtype.name]


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype (``BYTES`` -> ``object``) or of a numpy dtype name."""
    v2 = v2_datatype(datatype)
    if v2 == "BF16":
        raise UserError("BF16 tensors have no numpy dtype; declare them FP32 and cast in the model")
    return np.dtype(V2_TO_NUMPY[v2])
