"""Open Inference Protocol v2 codec: JSON tensors and the binary tensor data extension.

Pure functions from bytes to numpy and back; no HTTP, no model. Every malformed request raises a
:class:`ServeError` carrying the HTTP status (400 for bad input, 413 for too large), never a
bare ``KeyError`` or ``ValueError``.

The binary extension (what ``tritonclient.http`` sends by default): the body starts with a JSON
header of ``Inference-Header-Content-Length`` bytes, followed by the raw little-endian data of
each input that declares ``parameters.binary_data_size``, in input order. ``BYTES`` elements
are a 4-byte little-endian length followed by the bytes.

>>> import numpy as np
>>> body, n = encode_infer_response(model_name="m", model_version="1", request_id="7",
...     outputs={"y": np.arange(3, dtype=np.float32)}, requested=(), binary_output=False)
>>> n is None, loads(body)["outputs"][0]["data"]
(True, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.datatypes import Datatype

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "MAX_DIM",
    "MAX_ELEMENTS",
    "MAX_RANK",
    "InferRequest",
    "RequestedOutput",
    "ServeError",
    "datatype_of",
    "decode_bytes_tensor",
    "decode_infer_request",
    "dumps",
    "encode_bytes_tensor",
    "encode_infer_response",
    "loads",
]

#: The header that says how many leading body bytes are the JSON part (binary extension).
HEADER_LENGTH = "Inference-Header-Content-Length"

#: Shape limits, checked before any array is made: at most MAX_RANK dimensions, each at most
#: MAX_DIM, and at most MAX_ELEMENTS elements counting every non-zero dimension (so a zero-element
#: shape such as ``[0, 2**62]`` is refused too: the model would see its other dimensions).
MAX_RANK = 32
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**31 - 1

#: v2 datatype -> numpy dtype (little-endian). BF16 has no numpy type and is refused.
DATATYPES: dict[Datatype, np.dtype[Any]] = {
    Datatype.BOOL: np.dtype(np.bool_),
    Datatype.UINT8: np.dtype("<u1"),
    Datatype.UINT16: np.dtype("<u2"),
    Datatype.UINT32: np.dtype("<u4"),
    Datatype.UINT64: np.dtype("<u8"),
    Datatype.INT8: np.dtype("<i1"),
    Datatype.INT16: np.dtype("<i2"),
    Datatype.INT32: np.dtype("<i4"),
    Datatype.INT64: np.dtype("<i8"),
    Datatype.FP16: np.dtype("<f2"),
    Datatype.FP32: np.dtype("<f4"),
    Datatype.FP64: np.dtype("<f8"),
    Datatype.BYTES: np.dtype(object),
}
_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if dt.kind != "O"}
# numpy array kinds a JSON list may decode to, per target kind: ints never silently become floats
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf", "O": "USO"}

try:  # orjson is 5-10x faster on large JSON tensors; the stdlib is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


class ServeError(UserError):
    """A request the server refuses, with its HTTP status and extra response headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


def bad_request(message: str) -> ServeError:
    return ServeError(400, message)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; raises :class:`ServeError` 400 on anything that is not valid JSON."""
    try:
        if _orjson is not None:
            return _orjson.loads(data)
        if isinstance(data, memoryview):
            data = data.tobytes()
        return json.loads(data)
    except RecursionError:
        raise bad_request("malformed JSON: nested too deeply") from None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise bad_request(f"malformed JSON: {message}") from None


def dumps(obj: Any) -> bytes:
    """Serialise to compact UTF-8 JSON (NaN and infinities become ``null``, as JSON has none)."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False).encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def datatype_of(dtype: np.dtype[Any] | str) -> Datatype:
    """The v2 datatype of a numpy dtype (``float32`` -> ``FP32``, ``object`` -> ``BYTES``)."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return Datatype.BYTES
    name = _BY_KIND.get((dt.kind, dt.itemsize))
    if name is None:
        raise UserError(f"numpy dtype {dt} has no Open Inference Protocol datatype")
    return name


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of the request's ``outputs``: a name and whether to return it as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: inputs as numpy arrays, in the order the client sent them."""

    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, Datatype]
    outputs: tuple[RequestedOutput, ...]  # empty: every output
    binary_output: bool  # the request-level ``binary_data_output`` parameter
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Size of the first axis of the first input (the batch the request brings)."""
        first = next(iter(self.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1


def decode_infer_request(
    body: bytes | bytearray | memoryview, header_length: int | str | None = None
) -> InferRequest:
    """Decode an inference request body (JSON only, or JSON header + binary tensors).

    ``header_length`` is the ``Inference-Header-Content-Length`` header as received (or None).
    """
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        try:
            length = int(header_length)
        except (TypeError, ValueError):
            raise bad_request(f"{HEADER_LENGTH} must be an integer, not {str(header_length)[:40]!r}") from None
        if not 0 < length <= len(view):
            raise bad_request(
                f"{HEADER_LENGTH} is {length} but the body has {len(view)} bytes; the JSON header "
                "must be a non-empty prefix of the body"
            )
        header, binary = view[:length], view[length:]
    doc = loads(header)
    if not isinstance(doc, dict):
        raise bad_request("the inference request must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "the request")
    for unsupported in ("shared_memory_region", "sequence_id"):
        if unsupported in parameters:
            raise bad_request(f"parameter {unsupported!r} is not supported by this server")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise bad_request("parameter 'binary_data_output' must be true or false")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, Datatype] = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        name, datatype, shape, params = _tensor_header(tensor, f"inputs[{i}]")
        if name in inputs:
            raise bad_request(f"input {name!r} appears twice")
        for unsupported in _SHARED_MEMORY:
            if unsupported in params:
                raise bad_request(f"input {name!r}: parameter {unsupported!r} is not supported by this server")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise bad_request(f"input {name!r}: binary_data_size must be a non-negative integer")
            if "data" in tensor:
                raise bad_request(f"input {name!r} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise bad_request(
                    f"input {name!r} declares {size} binary bytes but only {len(binary) - offset} "
                    "remain in the body (truncated request?)"
                )
            inputs[name] = _from_binary(binary[offset : offset + size], name, datatype, shape)
            offset += size
        else:
            if "data" not in tensor:
                raise bad_request(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            inputs[name] = _from_json(tensor["data"], name, datatype, shape)
        datatypes[name] = datatype
    if offset != len(binary):
        raise bad_request(
            f"the body has {len(binary) - offset} binary bytes that no input's binary_data_size accounts for"
        )
    return InferRequest(
        id=request_id,
        inputs=inputs,
        datatypes=datatypes,
        outputs=_requested_outputs(doc.get("outputs"), binary_output),
        binary_output=binary_output,
        parameters=parameters,
    )


_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'parameters' of {where} must be a JSON object")
    return value


def _tensor_header(tensor: Any, where: str) -> tuple[str, Datatype, tuple[int, ...], dict[str, Any]]:
    if not isinstance(tensor, dict):
        raise bad_request(f"{where} must be a JSON object")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where} needs a non-empty string 'name'")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise bad_request(f"input {name!r} needs a string 'datatype'")
    if datatype not in DATATYPES:
        raise bad_request(
            f"input {name!r} has unsupported datatype {datatype[:20]!r}; use one of: {', '.join(DATATYPES)}"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_request(f"input {name!r} needs 'shape': a list of non-negative integers")
    _check_shape(shape, name)
    return name, Datatype(datatype), tuple(shape), _parameters(tensor.get("parameters"), f"input {name!r}")


def _check_shape(shape: list[int], name: str) -> None:
    if len(shape) > MAX_RANK:
        raise bad_request(f"input {name!r} has {len(shape)} dimensions; at most {MAX_RANK} are allowed")
    if any(d > MAX_DIM for d in shape):
        raise bad_request(f"input {name!r}: a dimension is larger than {MAX_DIM}")
    # a non-empty shape has to match its data (which the payload limit bounds); an empty one does not
    if 0 in shape and math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise bad_request(f"input {name!r}: shape {shape} is larger than {MAX_ELEMENTS} elements")


def _count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _from_binary(buf: memoryview, name: str, datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
    count = _count(shape)
    if datatype is Datatype.BYTES:
        return decode_bytes_tensor(buf, count, name=name).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(buf) != count * dtype.itemsize:
        raise bad_request(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(buf)}"
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def _from_json(data: Any, name: str, datatype: Datatype, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]  # a lone scalar for a one-element tensor
    count = _count(shape)
    target = DATATYPES[datatype]
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise bad_request(f"input {name!r}: 'data' is ragged (nested lists of different lengths)") from None
    if arr.size != count:
        raise bad_request(
            f"input {name!r}: shape {list(shape)} has {count} elements but 'data' has {arr.size}"
        )
    if count == 0:
        return np.zeros(shape, dtype=target)
    if arr.dtype.kind not in _JSON_KINDS[target.kind]:
        raise bad_request(f"input {name!r}: 'data' holds {_kind_name(arr.dtype)}, not {datatype}")
    if datatype is Datatype.BYTES:
        # numpy turns [1, "a"] into two strings and keeps None or {} as objects: check the JSON values
        items = _flat_json(data)
        if not all(isinstance(item, str) for item in items):
            raise bad_request(f"input {name!r}: BYTES 'data' must hold strings only")
        flat = np.empty(count, dtype=object)
        for i, item in enumerate(items):
            flat[i] = item.encode()
        return flat.reshape(shape)
    if target.kind in "iu":
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise bad_request(f"input {name!r}: a value is out of range for {datatype}")
    with np.errstate(over="ignore"):  # overflow is refused just below
        out = arr.astype(target, copy=False).reshape(shape)
    if target.kind == "f" and target.itemsize < arr.dtype.itemsize and not np.isfinite(out).all():
        raise bad_request(f"input {name!r}: a value is out of range for {datatype}")  # JSON has no inf
    return out


def _flat_json(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings"}.get(
        dtype.kind, "mixed values"
    )


def _requested_outputs(value: Any, binary_default: bool) -> tuple[RequestedOutput, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_request("'outputs' must be a list")
    found: list[RequestedOutput] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad_request(f"outputs[{i}] must be an object with a string 'name'")
        if item["name"] in names:
            raise bad_request(f"output {item['name'][:100]!r} is requested twice")
        names.add(item["name"])
        params = _parameters(item.get("parameters"), f"output {item['name']!r}")
        if params.get("classification"):
            raise bad_request("the classification extension is not supported; request the raw output")
        if "shared_memory_region" in params:
            raise bad_request("parameter 'shared_memory_region' is not supported by this server")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise bad_request(f"output {item['name']!r}: binary_data must be true or false")
        found.append(RequestedOutput(item["name"], binary))
    return tuple(found)


# BYTES tensors ---------------------------------------------------------------------------------
_LEN = struct.Struct("<I")


def decode_bytes_tensor(buf: bytes | memoryview, count: int, *, name: str = "tensor") -> np.ndarray:
    """``count`` elements of (4-byte LE length, bytes) from ``buf``, as an object array of bytes."""
    view = memoryview(buf)
    if count * 4 > len(view):  # each element needs at least its 4-byte length: refuse before allocating
        raise bad_request(f"input {name!r}: {len(view)} bytes cannot hold {count} BYTES elements")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise bad_request(f"input {name!r}: BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise bad_request(f"input {name!r}: BYTES element {i} declares {n} bytes past the end of the data")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != len(view):
        raise bad_request(f"input {name!r}: {len(view) - pos} bytes follow the last BYTES element")
    return out


def encode_bytes_tensor(arr: np.ndarray) -> bytes:
    """Serialise a BYTES tensor (``str`` elements are UTF-8 encoded) in row-major order."""
    parts: list[bytes] = []
    for item in np.asarray(arr, dtype=object).reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


# responses --------------------------------------------------------------------------------------
def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput],
    binary_output: bool,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header length to send.

    ``requested`` empty means every output, each binary iff ``binary_output``. Raises
    :class:`ServeError` 400 for a requested output the model does not have.
    """
    if requested:
        wanted = []
        for item in requested:
            if item.name not in outputs:
                raise bad_request(
                    f"unknown output {item.name!r}; the model has: {', '.join(outputs) or 'none'}"
                )
            wanted.append((item.name, item.binary))
    else:
        wanted = [(name, binary_output) for name in outputs]
    header_outputs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, binary in wanted:
        arr = np.asarray(outputs[name])
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            if datatype is Datatype.BYTES:
                blob: bytes | memoryview = encode_bytes_tensor(arr)
            else:
                le = arr if arr.dtype.byteorder != ">" else arr.astype(arr.dtype.newbyteorder("<"))
                blob = memoryview(np.ascontiguousarray(le)).cast("B")
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr, name)
        header_outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = header_outputs
    header = dumps(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _json_data(arr: np.ndarray, name: str) -> list[Any]:
    flat = arr.reshape(-1)
    if arr.dtype.kind in "OSU":
        values = []
        for item in flat.tolist():
            if isinstance(item, bytes):
                try:
                    item = item.decode()
                except UnicodeDecodeError:
                    raise bad_request(
                        f"output {name!r} holds bytes that are not UTF-8; request it with binary_data"
                    ) from None
            values.append(item)
        return values
    return flat.tolist()
