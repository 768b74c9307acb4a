"""torch -> ONNX export helper: checks, numeric comparison, and the dynamo -> legacy fallback."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from zhisuan.errors import UserError
from zhisuan.zoo.torch_export import export_onnx


class Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.export refuses it; the legacy tracer bakes one branch in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2.0
        return x - 1.0


class FixedBatch(torch.nn.Module):
    """Flattens with the batch size as a Python int, which the legacy tracer records as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(int(x.shape[0]), -1).relu()


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()


def test_legacy_export_is_checked_dynamic_and_close_to_torch(tmp_path) -> None:
    out = tmp_path / "linear.onnx"
    module = _linear()
    messages: list[str] = []
    report = export_onnx(
        module,
        (torch.randn(2, 4),),
        out,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        check_args=[(torch.randn(2, 4),), (torch.randn(7, 4),)],
        exporters=("legacy",),
        metadata={"zhisuan.zoo_model": "toy"},
        progress=messages.append,
    )
    assert report.exporter == "legacy" and report.fallback_reason is None
    assert report.opset == 17 and report.checked_samples == 2
    assert 0.0 <= report.max_abs_error < 1e-6
    assert set(report.max_abs_error_per_output) == {"y"}
    assert any("comparing ONNX Runtime with torch" in m for m in messages)

    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["zhisuan.exporter"] == "legacy"
    assert meta["zhisuan.zoo_model"] == "toy"
    assert float(meta["zhisuan.max_abs_error_vs_torch"]) == pytest.approx(report.max_abs_error, abs=1e-9)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # Runs at a batch size never seen during export, matching torch.
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_dynamo_failure_falls_back_to_legacy_with_the_reason(tmp_path) -> None:
    positive = (torch.rand(2, 3) + 0.1,)
    report = export_onnx(
        Branchy(), positive, tmp_path / "b.onnx", input_names=["x"], output_names=["y"],
        check_args=[positive, (torch.rand(2, 3) + 0.5,)],
    )
    assert report.exporter == "legacy"
    assert [a.exporter for a in report.attempts] == ["dynamo", "legacy"]
    assert not report.attempts[0].ok and report.attempts[1].ok
    assert report.fallback_reason and report.fallback_reason.startswith("dynamo: ")
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "b.onnx")).metadata_props}
    assert meta["zhisuan.export_fallback_reason"] == report.fallback_reason


def test_a_baked_in_branch_is_caught_by_the_numeric_check(tmp_path) -> None:
    # The legacy tracer keeps the x*2 branch; a negative sample takes the other branch in torch.
    positive, negative = (torch.rand(2, 3) + 0.1,), (-torch.rand(2, 3) - 0.1,)
    out = tmp_path / "b.onnx"
    with pytest.raises(UserError) as info:
        export_onnx(Branchy(), positive, out, input_names=["x"], output_names=["y"], check_args=[positive, negative])
    message = str(info.value)
    assert "dynamo: " in message and "legacy: max abs error" in message
    assert not out.exists()


def test_a_fixed_batch_size_is_caught(tmp_path) -> None:
    with pytest.raises(UserError, match=r"legacy: .*shape"):
        export_onnx(
            FixedBatch(), (torch.randn(2, 3, 4),), tmp_path / "f.onnx", input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}}, check_args=[(torch.randn(2, 3, 4),), (torch.randn(3, 3, 4),)],
            exporters=("legacy",),
        )


def test_bad_arguments_are_user_errors(tmp_path) -> None:
    module = _linear()
    with pytest.raises(UserError, match="2 input names"):
        export_onnx(module, (torch.randn(1, 4),), tmp_path / "m.onnx", input_names=["a", "b"], output_names=["y"])
    with pytest.raises(UserError, match="neither inputs nor outputs"):
        export_onnx(module, (torch.randn(1, 4),), tmp_path / "m.onnx", input_names=["x"], output_names=["y"],
                    dynamic_axes={"z": {0: "batch"}})
    with pytest.raises(UserError, match="1 outputs for 2 output names"):
        export_onnx(module, (torch.randn(1, 4),), tmp_path / "m.onnx", input_names=["x"], output_names=["y", "z"])


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the dynamo exporter needs onnxscript")
def test_dynamo_exporter_is_used_when_it_can_write_the_opset(tmp_path) -> None:
    report = export_onnx(
        _linear(), (torch.randn(2, 4),), tmp_path / "d.onnx", input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset=18,
        check_args=[(torch.randn(2, 4),), (torch.randn(5, 4),)],
    )
    assert report.exporter == "dynamo" and report.opset == 18 and report.max_abs_error < 1e-5
