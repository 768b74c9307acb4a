"""The null backend: a model's signature and outputs of the right shape and dtype, with no compute."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zhisuan.cli import app as app_module
from zhisuan.errors import UserError
from zhisuan.runtime import get_backend, load_runtime
from zhisuan.runtime.backend_onnxruntime import OrtOptions


def _two_inputs() -> onnx.ModelProto:
    """ids [batch, seq] int64 and x [batch, 4] float -> pooled [batch, 4], count [] int64,
    mask [batch, seq] bool, free [n] float16 (a dim no input names)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["pooled"])], "sig",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("count", TensorProto.INT64, []),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"]),
         helper.make_tensor_value_info("free", TensorProto.FLOAT16, ["n", None])],
    )
    return helper.make_model(graph)


def test_outputs_take_their_shapes_from_the_feeds_and_are_zeros() -> None:
    rt = load_runtime(_two_inputs(), "null")
    feeds = {"ids": np.ones((3, 7), np.int64), "x": np.ones((3, 4), np.float32)}
    out = rt.run(feeds)
    assert {k: (v.shape, v.dtype.name) for k, v in out.items()} == {
        "pooled": ((3, 4), "float32"), "count": ((), "int64"), "mask": ((3, 7), "bool"), "free": ((1, 1), "float16"),
    }
    assert all(not v.any() for v in out.values())
    assert list(rt.run(feeds, ["mask"])) == ["mask"]
    assert rt.runs == 2


def test_signature_matches_onnxruntime(graphs) -> None:
    for graph in graphs.values():
        with load_runtime(graph.path, "null") as null, load_runtime(graph.path, "onnxruntime") as ort:
            assert null.inputs() == ort.inputs()
            assert null.outputs() == ort.outputs()
            got = null.run(graph.feeds)
            want = ort.run(graph.feeds)
            assert {k: (v.shape, v.dtype) for k, v in got.items()} == {k: (v.shape, v.dtype) for k, v in want.items()}


def test_feeds_are_checked_like_every_backend(mlp) -> None:
    rt = load_runtime(mlp.path, "null")
    with pytest.raises(UserError, match=r"missing \['x'\]; unknown \['input'\]"):
        rt.run({"input": np.zeros((1, 4), np.float32)})
    with pytest.raises(UserError, match="'x' is float64, the model takes float32"):
        rt.run({"x": np.zeros((1, 4))})
    with pytest.raises(UserError, match=r"unknown outputs \['z'\]"):
        rt.run(mlp.feeds, output_names=["z"])
    assert rt.runs == 0  # a refused run is not served


def test_loads_path_bytes_and_proto_and_records_what_ran(mlp) -> None:
    proto = onnx.load(str(mlp.path))
    for model in (mlp.path, str(mlp.path), proto.SerializeToString(), proto):
        assert [s.name for s in load_runtime(model, "null").inputs()] == ["x"]
    info = load_runtime(mlp.path, "null", device="null", intra_op_threads=2).info.to_dict()
    assert (info["runtime"], info["device"], info["provider"], info["intra_op_threads"]) == ("null", "null", "null", 2)
    assert info["details"]["computes"] is False
    json.dumps(info)


def test_refuses_what_it_cannot_do(tmp_path, mlp) -> None:
    with pytest.raises(UserError, match="model file not found"):
        load_runtime(tmp_path / "missing.onnx", "null")
    with pytest.raises(UserError, match="null backend has no device 'cuda'"):
        load_runtime(mlp.path, "null", device="cuda")
    with pytest.raises(UserError, match=r"'session_config' is an option of onnxruntime, not of null"):
        load_runtime(mlp.path, "null", session_config={"a": "b"})
    with pytest.raises(UserError, match="OrtOptions are onnxruntime options; null takes NullOptions"):
        load_runtime(mlp.path, "null", options=OrtOptions())


def test_is_listed_available(capsys) -> None:
    status = get_backend("null").status()
    assert status.available and status.devices == ("null",)
    try:
        app_module.main(["runtime", "list", "--json"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    statuses = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert statuses["null"]["available"] is True
