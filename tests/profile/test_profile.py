"""zhisuan profile: analytic FLOPs, per-operator times from ORT and OpenVINO, the roofline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from zhisuan.profile import DevicePeaks, node_costs, profile_model
from zhisuan.profile.api import parse_ort_trace

# Fixed peaks so tests do not spend seconds measuring the machine (device_peaks is tested once).
PEAKS = DevicePeaks(50.0, 20.0, 300.0, "test", "fixed", 2)


def _conv_matmul(path: Path) -> Path:
    """x[B,3,32,32] -Conv(8,3x3,pad 1)+bias-> Relu -> Reshape[-1,32] -> MatMul(32x16) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"),
             numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "M"),
             numpy_helper.from_array(np.array([-1, 32], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape"),
             helper.make_node("MatMul", ["f", "M"], ["y"], name="matmul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_matmul_flops_are_exactly_2mkn_and_bytes_count_every_tensor() -> None:
    m, k, n = 7, 13, 5
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["M", k]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (cost,) = node_costs(model, {"a": np.zeros((m, k), np.float32), "b": np.zeros((k, n), np.float32)})
    assert cost.flops == 2 * m * k * n
    assert cost.bytes == 4 * (m * k + k * n + m * n)
    assert cost.output_shapes == ((m, n),)


def test_conv_formula_on_a_known_case(tmp_path) -> None:
    model = onnx.load(str(_conv_matmul(tmp_path / "g.onnx")))
    costs = {c.name: c for c in node_costs(model, {"x": np.zeros((2, 3, 32, 32), np.float32)})}
    out = 2 * 8 * 32 * 32  # N x C_out x H x W
    assert costs["conv"].flops == 2 * out * 3 * 3 * 3 + out  # MACs x 2, plus the bias add
    assert costs["conv"].weight_bytes == (8 * 3 * 3 * 3 + 8) * 4
    assert costs["relu"].flops == out
    # shapes after Reshape come from data propagation: [2*8*32*32/32, 32] x [32, 16]
    assert costs["matmul"].flops == 2 * (out // 32) * 32 * 16
    assert costs["reshape"].flops == 0 and costs["reshape"].bytes > 0


def test_ort_profile_times_sum_to_the_total_and_join_flops(tmp_path) -> None:
    path = _conv_matmul(tmp_path / "g.onnx")
    result = profile_model(path, runs=5, warmup=1, batch=2, peaks=PEAKS, ort_optimization="basic")
    names = {n.name for n in result.per_node}
    assert {"conv", "relu", "matmul"} <= names
    assert sum(n.time_ms for n in result.per_node) == pytest.approx(result.node_time_ms)
    assert sum(n.percent for n in result.per_node) == pytest.approx(100.0)
    assert sum(o.time_ms for o in result.per_op_type) == pytest.approx(result.node_time_ms)
    assert 0 < result.node_time_ms <= result.latency_ms
    assert result.matched_time_pct > 90
    conv = next(n for n in result.per_node if n.name == "conv")
    assert conv.flops == 2 * (2 * 8 * 32 * 32) * 27 + 2 * 8 * 32 * 32 and conv.bound in ("memory", "compute")
    assert result.flops == sum(c.flops for c in node_costs(onnx.load(str(path)), {"x": np.zeros((2, 3, 32, 32), np.float32)}))
    r = result.roofline
    assert r.ridge_point == pytest.approx(50.0 / 20.0)
    assert r.model_intensity == pytest.approx(result.flops / result.bytes)
    assert r.model_attained_gflops == pytest.approx(result.flops / result.latency_ms / 1e6)
    assert r.bound == ("compute" if r.model_intensity >= r.ridge_point else "memory")
    data = result.to_dict()
    assert set(data["totals"]) >= {"latency_ms", "gflops", "flops", "bytes"}
    assert set(data["roofline"]) >= {"peak_gflops_measured", "peak_gflops_theoretical", "bandwidth_gbps_measured",
                                     "ridge_point", "model_intensity", "model_attained_gflops", "bound"}


def test_parse_ort_trace_drops_warmup_runs() -> None:
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        {"cat": "Node", "name": "a_kernel_time", "ts": 10, "dur": 50, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        {"cat": "Node", "name": "a_kernel_time", "ts": 210, "dur": 30, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "a_fence_before", "ts": 209, "dur": 1, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 100},
        {"cat": "Node", "name": "a_kernel_time", "ts": 410, "dur": 10, "args": {"op_name": "Conv"}},
    ]
    assert parse_ort_trace(events, skip_runs=1, runs=2) == [("a", "Conv", 0.02, None)]


def test_openvino_perf_counters_show_kernels_and_precision(tmp_path) -> None:
    pytest.importorskip("openvino")
    result = profile_model(_conv_matmul(tmp_path / "g.onnx"), runtime="openvino", runs=5, warmup=1, peaks=PEAKS)
    assert result.per_node and all(n.time_ms >= 0 for n in result.per_node)
    kernels = [n.exec_type for n in result.per_node]
    assert all(kernels) and any("f32" in k.lower() for k in kernels)  # f32 hint: no bf16 kernels
    assert not any("bf16" in k.lower() for k in kernels)
    assert any(n.flops for n in result.per_node)  # the convolution matched its graph node
    assert result.runtime_info["precision"] == "f32"


def test_measured_peaks_are_below_the_theoretical_peak() -> None:
    from zhisuan.profile import device_peaks

    peaks = device_peaks()
    assert peaks.peak_gflops_measured > 0 and peaks.bandwidth_gbps_measured > 0
    if peaks.peak_gflops_theoretical is not None:
        assert peaks.peak_gflops_measured <= peaks.peak_gflops_theoretical * 1.1
        assert peaks.theoretical_basis.startswith("theoretical: ")  # says how it was computed
        assert "MHz" in peaks.theoretical_basis and "FLOP/cycle" in peaks.theoretical_basis


def test_cli_profile_json(tmp_path) -> None:
    path = _conv_matmul(tmp_path / "g.onnx")
    proc = subprocess.run([sys.executable, "-m", "zhisuan", "profile", str(path), "--runs", "3", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["per_node"] and data["per_op_type"] and data["totals"]["flops"] > 0
    r = data["roofline"]
    assert r["model_attained_gflops"] <= (r["peak_gflops_theoretical"] or float("inf"))
    bad = subprocess.run([sys.executable, "-m", "zhisuan", "profile", str(tmp_path / "none.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error:")


@pytest.mark.slow
def test_efficientnet_top_operators_include_conv() -> None:
    result = profile_model("efficientnet-lite0", runs=5, warmup=1, peaks=PEAKS)
    top_types = [o.op_type for o in result.per_op_type[:3]]
    assert any("Conv" in t for t in top_types)
    assert result.flops > 3e8  # ~0.4 GFLOP per 224x224 image (2 x ~0.2 GMAC)
