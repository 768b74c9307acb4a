"""Backend discovery and the options every backend shares."""

from __future__ import annotations

import pytest

from zhisuan.errors import UserError
from zhisuan.runtime import backend_names, backend_status, load_runtime


def test_every_backend_is_discovered_in_order() -> None:
    assert backend_names() == ["onnxruntime", "openvino", "torch", "tensorrt", "null"]


def test_status_of_every_backend_says_available_or_why_not() -> None:
    for status in backend_status():
        assert status.install_hint
        if status.available:
            assert status.version and status.devices and status.reason is None
        else:
            assert status.reason


def test_unknown_runtime_and_precision(mlp) -> None:
    with pytest.raises(UserError, match="unknown runtime 'tvm'; choose one of: onnxruntime, openvino"):
        load_runtime(mlp.path, "tvm")
    with pytest.raises(UserError, match="unknown precision 'fp8'; choose one of: fp32, fp16, bf16, int8"):
        load_runtime(mlp.path, "openvino", precision="fp8")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_info_is_a_plain_dict(mlp, backend: str) -> None:
    import json

    model = mlp.torch_model if backend == "torch" else mlp.path
    info = load_runtime(model, backend, intra_op_threads=1).info.to_dict()
    assert info["runtime"] == backend
    assert info["intra_op_threads"] == 1
    json.dumps(info)  # every field serialisable for reports
