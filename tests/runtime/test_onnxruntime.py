"""ONNX Runtime backend: provider selection (with a fake session), options, errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import onnxruntime as ort
import pytest

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime import load_runtime
from zhisuan.runtime.backend_onnxruntime import provider_chain
from zhisuan.runtime.base import Precision

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


class _FakeSession:
    """Stands in for ort.InferenceSession: records what it was given, uses the first provider."""

    created: ClassVar[list[_FakeSession]] = []
    fallback = False  # True: behave like a session whose asked-for provider failed to initialise

    def __init__(self, source, sess_options=None, providers=None) -> None:
        self.providers = providers
        names = [p if isinstance(p, str) else p[0] for p in providers]
        self._used = names[-1:] if _FakeSession.fallback else names
        _FakeSession.created.append(self)

    def get_providers(self) -> list[str]:
        return self._used

    def get_inputs(self):
        return [SimpleNamespace(name="x", type="tensor(float)", shape=["batch", 4])]

    def get_outputs(self):
        return [SimpleNamespace(name="y", type="tensor(float)", shape=["batch", 8])]


@pytest.fixture
def gpu_build(monkeypatch):
    """onnxruntime as if it were onnxruntime-gpu with TensorRT, on a machine with a GPU."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", _FakeSession)
    monkeypatch.setattr(_FakeSession, "fallback", False)
    _FakeSession.created.clear()
    return _FakeSession


def test_cpu_chain_is_cpu_only() -> None:
    assert provider_chain("cpu", 0, Precision.FP32, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_cuda_gets_its_device_id(gpu_build, mlp) -> None:
    rt = load_runtime(mlp.path, "onnxruntime", device="cuda:1")
    (session,) = gpu_build.created
    assert session.providers == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert rt.info.provider == "CUDAExecutionProvider"
    assert rt.info.device == "cuda:1"


def test_tensorrt_ep_gets_fp16_and_an_engine_cache_under_the_cache_dir(gpu_build, mlp, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ZHISUAN_CACHE_DIR", str(tmp_path))
    rt = load_runtime(mlp.path, "onnxruntime", device="tensorrt", precision="fp16")
    (session,) = gpu_build.created
    (trt_name, trt_options), (cuda_name, cuda_options), cpu = session.providers
    assert (trt_name, cuda_name, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt_options["trt_fp16_enable"] is True
    assert trt_options["trt_engine_cache_enable"] is True
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "onnxruntime-trt")
    assert (tmp_path / "onnxruntime-trt").is_dir()
    assert trt_options["device_id"] == cuda_options["device_id"] == 0
    assert rt.info.precision.startswith("fp16")


def test_tensorrt_ep_fp32_does_not_enable_fp16(tmp_path) -> None:
    chain = provider_chain("tensorrt", 2, Precision.FP32, GPU_BUILD, cache_dir=tmp_path)
    assert chain[0][1]["trt_fp16_enable"] is False
    assert chain[0][1]["device_id"] == 2


def test_missing_cuda_ep_is_backend_unavailable_with_a_reason(monkeypatch, mlp) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError) as info:
        load_runtime(mlp.path, "onnxruntime", device="cuda")
    assert info.value.backend == "onnxruntime CUDAExecutionProvider"
    assert info.value.reason == "this onnxruntime build offers only CPUExecutionProvider"
    assert "onnxruntime-gpu" in info.value.install_hint


def test_a_session_that_falls_back_to_cpu_is_refused(gpu_build, mlp) -> None:
    gpu_build.fallback = True
    with pytest.raises(BackendUnavailableError, match="fell back to CPUExecutionProvider"):
        load_runtime(mlp.path, "onnxruntime", device="cuda")


def test_fp16_without_tensorrt_ep_asks_for_a_converted_model(mlp) -> None:
    with pytest.raises(UserError, match="runs the precision stored in the model"):
        load_runtime(mlp.path, "onnxruntime", precision="fp16")


def test_bad_device_and_options(mlp) -> None:
    with pytest.raises(UserError, match="onnxruntime has no device 'tpu'"):
        load_runtime(mlp.path, "onnxruntime", device="tpu")
    with pytest.raises(UserError, match="bad device 'cuda:x'"):
        load_runtime(mlp.path, "onnxruntime", device="cuda:x")
    with pytest.raises(UserError, match="unknown graph_optimization_level 'max'"):
        load_runtime(mlp.path, "onnxruntime", graph_optimization_level="max")


def test_cpu_session_records_threads_and_runs(mlp) -> None:
    rt = load_runtime(mlp.path, "onnxruntime", intra_op_threads=1, graph_optimization_level="disable")
    assert rt.info.intra_op_threads == 1
    assert rt.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(rt.run(mlp.feeds)["y"], mlp.reference(mlp.feeds)["y"], rtol=1e-5, atol=1e-6)


def test_missing_and_garbage_files(tmp_path) -> None:
    with pytest.raises(UserError, match="model file not found"):
        load_runtime(tmp_path / "missing.onnx", "onnxruntime")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(UserError, match="onnxruntime could not load") as info:
        load_runtime(garbage, "onnxruntime")
    assert "\n" not in str(info.value)


def test_wrong_input_names(mlp) -> None:
    rt = load_runtime(mlp.path, "onnxruntime")
    with pytest.raises(UserError, match=r"missing \['x'\]; unknown \['input'\]") as info:
        rt.run({"input": np.zeros((1, 4), np.float32)})
    assert "\n" not in str(info.value)


def test_session_config_entries_reach_the_session(monkeypatch, mlp) -> None:
    seen: list[tuple[str, str]] = []
    real = ort.SessionOptions

    class Recording(real):  # type: ignore[misc, valid-type]
        def add_session_config_entry(self, key: str, value: str) -> None:
            seen.append((key, value))
            super().add_session_config_entry(key, value)

    monkeypatch.setattr(ort, "SessionOptions", Recording)
    config = {"session.intra_op.allow_spinning": 0}
    with load_runtime(mlp.path, "onnxruntime", intra_op_threads=1, session_config=config) as rt:
        out = rt.run(mlp.feeds)
    assert seen == [("session.intra_op.allow_spinning", "0")]
    np.testing.assert_allclose(out["y"], mlp.reference(mlp.feeds)["y"], rtol=1e-5, atol=1e-5)
