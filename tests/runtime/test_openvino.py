"""OpenVINO backend: explicit precision read back, threads, hints, devices, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import openvino as ov
import pytest

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime import get_backend, load_runtime
from zhisuan.runtime.backend_openvino import openvino_device


def test_default_precision_is_f32_as_read_back_from_the_compiled_model(mlp) -> None:
    rt = load_runtime(mlp.path, "openvino")
    # The compiled model itself says f32, not just what we asked; on avx512_bf16/AMX CPUs
    # OpenVINO's own default would be bf16.
    assert rt.compiled_model.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert rt.info.precision == "f32"
    assert rt.info.details["requested_precision"] == "f32"
    assert rt.info.provider == "CPU"
    assert rt.info.version == ov.get_version()


def test_bf16_request_records_what_the_cpu_actually_runs(mlp) -> None:
    rt = load_runtime(mlp.path, "openvino", precision="bf16")
    ran = rt.compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert rt.info.precision == ran  # bf16 on CPUs that have it, f32 elsewhere
    assert rt.info.details["requested_precision"] == "bf16"
    got = rt.run(mlp.feeds)["y"]
    np.testing.assert_allclose(got, mlp.reference(mlp.feeds)["y"], rtol=3e-2, atol=3e-2)


def test_threads_are_set_and_read_back(mlp) -> None:
    rt = load_runtime(mlp.path, "openvino", intra_op_threads=1)
    assert rt.compiled_model.get_property("INFERENCE_NUM_THREADS") == 1
    assert rt.info.intra_op_threads == 1
    assert rt.info.inter_op_threads is None


def test_performance_hint_and_requests_are_recorded(mlp) -> None:
    latency = load_runtime(mlp.path, "openvino").info.details
    assert latency["performance_hint"] == "LATENCY"
    assert latency["optimal_number_of_infer_requests"] >= 1
    throughput = load_runtime(mlp.path, "openvino", performance_hint="throughput")
    assert throughput.info.details["performance_hint"] == "THROUGHPUT"
    assert throughput.info.details["optimal_number_of_infer_requests"] == (
        throughput.compiled_model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    )
    with pytest.raises(UserError, match="unknown performance_hint 'FASTEST'"):
        load_runtime(mlp.path, "openvino", performance_hint="fastest")


def test_loads_onnx_proto_and_openvino_ir(mlp, tmp_path) -> None:
    import onnx

    want = mlp.reference(mlp.feeds)["y"]
    from_proto = load_runtime(onnx.load(str(mlp.path)), "openvino")
    np.testing.assert_allclose(from_proto.run(mlp.feeds)["y"], want, rtol=1e-5, atol=1e-6)
    xml = tmp_path / "mlp.xml"
    # save_model compresses weights to f16 by default (errors rose to 4e-4 here): keep f32.
    ov.save_model(ov.Core().read_model(str(mlp.path)), str(xml), compress_to_fp16=False)
    from_ir = load_runtime(xml, "openvino")
    assert [s.name for s in from_ir.inputs()] == ["x"]
    assert [s.name for s in from_ir.outputs()] == ["y"]
    np.testing.assert_allclose(from_ir.run(mlp.feeds)["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", "CPU"), ("cpu:0", "CPU"), ("gpu", "GPU"), ("GPU:1", "GPU.1"), ("npu", "NPU"), ("openvino:AUTO", "AUTO")],
)
def test_device_names_map_to_openvino(device: str, expected: str) -> None:
    assert openvino_device(device) == expected


def test_unknown_and_absent_devices(mlp) -> None:
    with pytest.raises(UserError, match="openvino has no device 'cuda'"):
        load_runtime(mlp.path, "openvino", device="cuda")
    if "GPU" not in ov.Core().available_devices:
        with pytest.raises(BackendUnavailableError, match="OpenVINO sees only"):
            load_runtime(mlp.path, "openvino", device="gpu")


def test_unsupported_options_are_refused_not_ignored(mlp) -> None:
    with pytest.raises(UserError, match="int8 only from a quantized model"):
        load_runtime(mlp.path, "openvino", precision="int8")
    with pytest.raises(UserError, match="no inter-op thread pool"):
        load_runtime(mlp.path, "openvino", inter_op_threads=2)


def test_missing_garbage_and_wrong_kind_of_file(tmp_path) -> None:
    with pytest.raises(UserError, match="model file not found"):
        load_runtime(tmp_path / "missing.onnx", "openvino")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(UserError) as info:
        load_runtime(garbage, "openvino")
    assert "\n" not in str(info.value)
    assert "garbage.onnx" in str(info.value)
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match=r"loads an ONNX file \(.onnx\) or OpenVINO IR \(.xml\)"):
        load_runtime(other, "openvino")


def test_wrong_inputs_are_one_line_user_errors(mlp) -> None:
    rt = load_runtime(mlp.path, "openvino")
    with pytest.raises(UserError, match=r"missing \['x'\]; unknown \['input'\]"):
        rt.run({"input": np.zeros((1, 4), np.float32)})
    with pytest.raises(UserError, match="'x' is float64, the model takes float32"):
        rt.run({"x": np.zeros((1, 4))})  # OpenVINO itself would cast silently
    with pytest.raises(UserError, match=r"unknown outputs \['z'\]"):
        rt.run(mlp.feeds, output_names=["z"])


def test_status_lists_devices(monkeypatch) -> None:
    status = get_backend("openvino").status()
    assert status.available
    assert "CPU" in status.devices
    assert status.version == ov.get_version()


def test_missing_openvino_is_backend_unavailable_with_install_hint(mlp, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    status = get_backend("openvino").status()
    assert not status.available
    assert status.reason == "openvino is not installed"
    assert status.install_hint == "pip install openvino"
    with pytest.raises(BackendUnavailableError) as info:
        load_runtime(mlp.path, "openvino")
    assert info.value.install_hint == "pip install openvino"
    assert "install with: pip install openvino" in str(info.value)


def test_scalar_input_keeps_rank_zero() -> None:
    """A 0-d input (silero's ``sr``) must reach OpenVINO as a scalar, not as shape [1]."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["sr"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "f"], ["y"])],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with load_runtime(model, "openvino") as rt:
        y = rt.run({"x": np.ones(2, np.float32), "sr": np.array(16000, np.int64)})["y"]
    np.testing.assert_array_equal(y, [16000.0, 16000.0])
