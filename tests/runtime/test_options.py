"""Each backend's own options: typed, checked when made, and never silently ignored."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from zhisuan.errors import UserError
from zhisuan.runtime import backend_names, get_backend, load_runtime
from zhisuan.runtime.backend_onnxruntime import OrtOptions
from zhisuan.runtime.backend_openvino import OpenVinoOptions
from zhisuan.runtime.backend_tensorrt import TensorRtOptions
from zhisuan.runtime.backend_torch import TorchOptions
from zhisuan.runtime.base import BackendOptions, TensorSpec
from zhisuan.runtime.onnx_signature import onnx_signature


def test_every_backend_names_a_frozen_options_type() -> None:
    for name in backend_names():
        kind = get_backend(name).options_type
        assert issubclass(kind, BackendOptions) and kind.backend == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            kind().__setattr__("x", 1)


def test_unknown_and_wrong_backend_options_are_one_line_user_errors(mlp) -> None:
    with pytest.raises(UserError, match=r"onnxruntime has no option 'fastest'; its options are: graph_optimization_lev"):
        load_runtime(mlp.path, "onnxruntime", fastest=True)
    with pytest.raises(UserError, match=r"'performance_hint' is an option of openvino, not of onnxruntime") as info:
        load_runtime(mlp.path, "onnxruntime", performance_hint="LATENCY")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"'session_config' is an option of onnxruntime, not of openvino"):
        load_runtime(mlp.path, "openvino", session_config={"session.intra_op.allow_spinning": "0"})
    with pytest.raises(UserError, match="OpenVinoOptions are openvino options; onnxruntime takes OrtOptions"):
        load_runtime(mlp.path, "onnxruntime", options=OpenVinoOptions())
    with pytest.raises(UserError, match="TensorRtOptions are tensorrt options; torch takes TorchOptions"):
        load_runtime(mlp.torch_model, "torch", options=TensorRtOptions())


def test_bad_values_fail_when_the_options_are_made() -> None:
    with pytest.raises(UserError, match="unknown graph_optimization_level 'max'"):
        OrtOptions(graph_optimization_level="max")
    with pytest.raises(UserError, match="unknown performance_hint 'FASTEST'"):
        OpenVinoOptions(performance_hint="fastest")
    with pytest.raises(UserError, match="num_streams must be an integer"):
        OpenVinoOptions(num_streams="many")
    with pytest.raises(UserError, match="max_batch must be at least 1"):
        TensorRtOptions(max_batch=0)
    assert OrtOptions(session_config={"a": 1}).session_config == {"a": "1"}
    assert TorchOptions(input_names=["x"]).input_names == ("x",)


def test_options_object_and_keywords_combine(mlp) -> None:
    given = OrtOptions(graph_optimization_level="disable", session_config={"session.intra_op.allow_spinning": "0"})
    rt = load_runtime(mlp.path, "onnxruntime", intra_op_threads=1, options=given)
    assert rt.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert rt.info.details["session_config"] == {"session.intra_op.allow_spinning": "0"}
    rt = load_runtime(mlp.path, "onnxruntime", options=given, graph_optimization_level="basic")  # the keyword wins
    assert rt.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert rt.info.details["session_config"] == {"session.intra_op.allow_spinning": "0"}


def test_torch_options_name_a_plain_module(mlp) -> None:
    module = mlp.torch_model.module
    rt = load_runtime(module, "torch", options=TorchOptions(input_names=("x",), output_names=("y",)))
    np.testing.assert_allclose(rt.run(mlp.feeds)["y"], mlp.reference(mlp.feeds)["y"], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="a TorchModel carries its own input and output names"):
        load_runtime(mlp.torch_model, "torch", input_names=["x"], output_names=["y"])


def _chain() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["hidden"]), helper.make_node("Neg", ["hidden"], ["y"])], "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("form", ["proto", "bytes", "path"])
def test_expose_outputs_returns_intermediate_tensors(tmp_path, form: str) -> None:
    model = _chain()
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    source = {"proto": model, "bytes": model.SerializeToString(), "path": path}[form]
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    with load_runtime(source, "onnxruntime", expose_outputs=["hidden"]) as rt:
        assert [s.name for s in rt.outputs()] == ["y", "hidden"]
        out = rt.run({"x": x}, ["hidden", "y"])
    np.testing.assert_array_equal(out["hidden"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["y"], -np.maximum(x, 0))
    assert [o.name for o in model.graph.output] == ["y"]  # the caller's model is left as it was


def test_optimized_model_path_is_written_when_the_session_is_made(tmp_path) -> None:
    target = tmp_path / "optimized.onnx"
    load_runtime(_chain(), "onnxruntime", graph_optimization_level="basic", optimized_model_path=target).close()
    assert [o.name for o in onnx.load(str(target)).graph.output] == ["y"]


def test_one_signature_reader_for_path_bytes_and_proto(tmp_path) -> None:
    model = _chain()
    model.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0]))
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]))  # an initializer, not a feed
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    want = ([TensorSpec("x", "float32", ("batch", 3))], [TensorSpec("y", "float32", ("batch", 3))])
    for source in (model, model.SerializeToString(), path, str(path)):
        assert onnx_signature(source) == want
    with pytest.raises(UserError, match="cannot read the model bytes as ONNX"):
        onnx_signature(b"\x00\x01 not protobuf \xff" * 10)
    with pytest.raises(UserError, match="model file not found"):
        onnx_signature(tmp_path / "missing.onnx")
