"""The Open Inference Protocol v2 codec: JSON tensors, the binary extension, BYTES, and refusals."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from server_helpers import validate, with_binary_inlined

from zhisuan.serve.protocol import (
    DATATYPES,
    RequestedOutput,
    ServeError,
    datatype_of,
    decode_bytes_tensor,
    decode_infer_request,
    encode_bytes_tensor,
    encode_infer_response,
    loads,
)


def _binary(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_every_numeric_datatype_round_trips_binary_and_json(datatype: str) -> None:
    dtype = DATATYPES[datatype]
    values = np.array([[0, 1, 1], [1, 0, 1]]) if datatype == "BOOL" else np.array([[0, 1, 2], [3, 4, 5]])
    arr = values.astype(dtype)
    body, n = _binary(
        {"inputs": [{"name": "a", "shape": [2, 3], "datatype": datatype, "parameters": {"binary_data_size": arr.nbytes}}]},
        arr.tobytes(),
    )
    request = decode_infer_request(body, n)
    np.testing.assert_array_equal(request.inputs["a"], arr)
    assert request.inputs["a"].dtype == dtype and request.datatypes == {"a": datatype}
    doc = {"inputs": [{"name": "a", "shape": [2, 3], "datatype": datatype, "data": values.astype(dtype).tolist()}]}
    from_json = decode_infer_request(json.dumps(doc).encode()).inputs["a"]
    np.testing.assert_array_equal(from_json, arr)
    assert from_json.dtype == dtype
    for binary in (False, True):
        out, header_length = encode_infer_response(
            model_name="m", model_version="3", request_id=None, outputs={"a": arr}, requested=(), binary_output=binary,
        )
        if binary:
            head = json.loads(out[:header_length])
            doc = with_binary_inlined(head, out[header_length:])
        else:
            assert header_length is None
            doc = json.loads(out)
        validate("inference_response", doc)
        assert doc["outputs"][0]["datatype"] == datatype and doc["outputs"][0]["shape"] == [2, 3]
        np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], dtype=dtype).reshape(2, 3), arr)


def test_bytes_wire_format_and_round_trip() -> None:
    items = [b"", b"a", "zhī".encode(), bytes(range(256))]
    blob = encode_bytes_tensor(np.array(items, dtype=object))
    assert blob[:4] == struct.pack("<I", 0) and blob[4:9] == struct.pack("<I", 1) + b"a"
    assert decode_bytes_tensor(blob, 4).tolist() == items
    assert encode_bytes_tensor(np.array(["ab"], dtype=object)) == struct.pack("<I", 2) + b"ab"  # str -> UTF-8
    with pytest.raises(ServeError, match="ends after 4 of 5"):
        decode_bytes_tensor(blob + b"\0\0\0", 5)
    with pytest.raises(ServeError, match="cannot hold"):  # a huge declared count allocates nothing
        decode_bytes_tensor(blob, 10**15)
    with pytest.raises(ServeError, match="past the end"):
        decode_bytes_tensor(struct.pack("<I", 1000) + b"ab", 1)
    with pytest.raises(ServeError, match="follow the last"):
        decode_bytes_tensor(blob + b"x", 4)


def test_bytes_outputs_that_are_not_utf8_need_binary() -> None:
    outputs = {"t": np.array([b"\xff\xfe"], dtype=object)}
    with pytest.raises(ServeError, match="not UTF-8"):
        encode_infer_response(model_name="m", model_version="1", request_id=None, outputs=outputs,
                              requested=(), binary_output=False)
    body, n = encode_infer_response(model_name="m", model_version="1", request_id=None, outputs=outputs,
                                    requested=(), binary_output=True)
    assert n is not None and body[n:] == struct.pack("<I", 2) + b"\xff\xfe"


def test_requested_outputs_choose_names_and_encoding() -> None:
    outputs = {"a": np.zeros(2, np.float32), "b": np.ones(3, np.int64)}
    body, n = encode_infer_response(
        model_name="m", model_version="1", request_id="r", outputs=outputs,
        requested=(RequestedOutput("b", True),), binary_output=False,
    )
    head = json.loads(body[:n])
    assert [o["name"] for o in head["outputs"]] == ["b"] and head["id"] == "r"
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 24}
    with pytest.raises(ServeError, match="unknown output 'c'"):
        encode_infer_response(model_name="m", model_version="1", request_id=None, outputs=outputs,
                              requested=(RequestedOutput("c", False),), binary_output=False)
    request = decode_infer_request(json.dumps({
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
    }).encode())
    assert request.outputs == (RequestedOutput("a", True), RequestedOutput("b", False))


def test_non_finite_floats_become_null_in_json() -> None:
    body, _ = encode_infer_response(model_name="m", model_version="1", request_id=None,
                                    outputs={"y": np.array([np.nan, np.inf, 1.0], np.float32)},
                                    requested=(), binary_output=False)
    assert json.loads(body)["outputs"][0]["data"] == [None, None, 1.0]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}]}, "out of range for INT8"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}]}, "numbers, not INT32"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "BOOL", "data": [1, 0]}]}, "integers, not BOOL"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}, "integers, not BYTES"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1]}]}, "unsupported datatype"),
        ({"inputs": [{"name": "x", "shape": [True], "datatype": "FP32", "data": [1]}]}, "non-negative integers"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "neither 'data'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}, "appears twice"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "non-empty string 'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": 3, "data": [1]}]}, "string 'datatype'"),
        ({"inputs": "x"}, "non-empty list"),
        ({"id": 7, "inputs": []}, "'id' must be a string"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": []}, "JSON object"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
          "parameters": {"binary_data_output": "yes"}}, "true or false"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
          "parameters": {"shared_memory_region": "r"}}, "not supported"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
          "outputs": [{"name": "y", "parameters": {"classification": 3}}]}, "classification"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{}]}, "string 'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1],
                      "parameters": {"binary_data_size": 4}}]}, "both 'data' and binary_data_size"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": -1}}]},
         "non-negative integer"),
    ],
)
def test_malformed_requests_are_400_with_a_reason(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ServeError, match=message) as exc:
        decode_infer_request(json.dumps(doc).encode())
    assert exc.value.status == 400


def test_huge_declared_shapes_are_refused_without_allocating() -> None:
    huge = [10**9, 10**9]
    for datatype, size in (("FP32", 16), ("BYTES", 8)):
        body, n = _binary({"inputs": [{"name": "x", "shape": huge, "datatype": datatype,
                                       "parameters": {"binary_data_size": size}}]}, b"\0" * size)
        with pytest.raises(ServeError) as exc:
            decode_infer_request(body, n)
        assert exc.value.status == 400
    doc = {"inputs": [{"name": "x", "shape": huge, "datatype": "FP32", "data": [1.0]}]}
    with pytest.raises(ServeError, match="has 1"):
        decode_infer_request(json.dumps(doc).encode())
    empty = {"inputs": [{"name": "x", "shape": [0, 1000], "datatype": "BYTES", "data": []}]}
    assert decode_infer_request(json.dumps(empty).encode()).inputs["x"].shape == (0, 1000)


@pytest.mark.parametrize(("shape", "message"), [
    ([1] * 65, "65 dimensions; at most 32"),
    ([0, 2**62], "dimension is larger than"),
    ([0, 10**12], "dimension is larger than"),
    ([0, 2**20, 2**20], "larger than 2147483647 elements"),
])
@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_shape_limits_are_checked_before_any_array_is_made(shape: list[int], message: str, datatype: str) -> None:
    for doc, n in (
        ({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": []}]}, None),
        _binary({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                             "parameters": {"binary_data_size": 0}}]}, b""),
    ):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        with pytest.raises(ServeError, match=message) as exc:
            decode_infer_request(body, n)
        assert exc.value.status == 400


def test_json_scalars_nested_and_empty_tensors() -> None:
    doc = {"inputs": [
        {"name": "s", "shape": [1], "datatype": "INT64", "data": 5},
        {"name": "n", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
        {"name": "e", "shape": [0, 3], "datatype": "FP32", "data": []},
        {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["hé", "x"]},
    ]}
    request = decode_infer_request(json.dumps(doc).encode())
    assert request.inputs["s"].tolist() == [5] and request.inputs["n"].shape == (2, 2)
    assert request.inputs["e"].shape == (0, 3) and request.inputs["e"].dtype == np.float32
    assert request.inputs["b"].tolist() == ["hé".encode(), b"x"]
    assert request.rows == 1


def test_loads_refuses_non_json_with_400() -> None:
    for text in (b"", b"\xff\xfe", b"{", b"nan"):
        with pytest.raises(ServeError) as exc:
            loads(text)
        assert exc.value.status == 400


def test_datatype_names() -> None:
    assert [datatype_of(d) for d in ("float32", "int64", "bool", ">f4", "float16", "uint8")] == [
        "FP32", "INT64", "BOOL", "FP32", "FP16", "UINT8"
    ]
    assert datatype_of(np.dtype(object)) == datatype_of("U5") == "BYTES"
    from zhisuan.errors import UserError

    with pytest.raises(UserError, match="no Open Inference Protocol datatype"):
        datatype_of("complex64")


def test_big_endian_outputs_are_sent_little_endian() -> None:
    arr = np.arange(3, dtype=">i4")
    body, n = encode_infer_response(model_name="m", model_version="1", request_id=None, outputs={"y": arr},
                                    requested=(), binary_output=True)
    assert n is not None
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<i4"), [0, 1, 2])


@pytest.mark.parametrize(("datatype", "value"), [("FP16", 70000.0), ("FP16", -1e5), ("FP32", 1e39)])
def test_json_floats_out_of_range_are_refused_not_inf(datatype: str, value: float) -> None:
    doc = {"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": [1.0, value]}]}
    with pytest.raises(ServeError, match=f"out of range for {datatype}"):
        decode_infer_request(json.dumps(doc).encode())
    doc["inputs"][0]["data"] = [1.0, 65504.0]
    assert decode_infer_request(json.dumps(doc).encode()).inputs["x"].tolist() == [1.0, 65504.0]
