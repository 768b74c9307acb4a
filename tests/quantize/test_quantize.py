"""Quantization on tiny graphs built here: correctness, refusals, sensitivity, budgeted search, name maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from zhisuan.errors import UserError
from zhisuan.graph import read_name_map, write_name_map
from zhisuan.graph.namemap import NameMap
from zhisuan.quantize import QuantizeConfig, quantize_model, sensitivity_analysis

ort = pytest.importorskip("onnxruntime")


def _cnn(path: Path, *, opset: int = 11) -> Path:
    """Two convolutions whose weights live in Constant nodes, as paddle2onnx writes them."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1, "w1c")),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2, "w2c")),
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def _mlp(path: Path, *, outlier: bool = False) -> Path:
    """x[N,16] -> MatMul fc1 -> Relu -> MatMul fc2 -> Relu -> MatMul fc3 -> y[N,8].

    With ``outlier`` fc2's first weight row is 50 while the rest are ~0.2: one int8 scale cannot
    hold both, so quantizing fc2 wipes out its other weights. That row multiplies a feature that is
    ~1e-4 (fc1's first column is scaled down), so the float model is not dominated by it.
    """
    rng = np.random.default_rng(1)
    w1 = (rng.standard_normal((16, 32)) * 0.5).astype(np.float32)
    w2 = (rng.standard_normal((32, 32)) * 0.2).astype(np.float32)
    w3 = (rng.standard_normal((32, 8)) * 0.3).astype(np.float32)
    if outlier:
        w1[:, 0] *= 1e-4
        w2[0, :] = 50.0
    inits = [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="act1"),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="act2"),
        helper.make_node("MatMul", ["a2", "w3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_constant_weights_on_opset11_are_quantized_per_channel_and_run(tmp_path: Path) -> None:
    src = _cnn(tmp_path / "cnn.onnx", opset=11)
    out = tmp_path / "cnn-int8.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8", per_channel=True), random=4,
                            measure_latency=False)
    model = onnx.load(str(out))
    # opset raised before per-channel QDQ, and recorded
    assert result.preprocessing.opset_before == 11 and result.preprocessing.opset_after >= 13
    assert "constants-to-initializers" in result.preprocessing.changes
    # the Constant weights became int8 initializers with per-channel DequantizeLinear (axis, 8 scales)
    int8 = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8}
    assert {w.shape for w in int8.values() if w.ndim == 4} == {(8, 3, 3, 3), (4, 8, 3, 3)}
    scales = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith("w1") and "scale" in i.name]
    assert scales and scales[0].shape == (8,)
    assert not [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] in ("w1", "w2")]
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref, got = _run(src, x), _run(out, x)  # ORT loads it (axis on opset >= 13)
    assert _cos(ref, got) > 0.995
    assert not np.array_equal(ref, got)  # really quantized, not a float copy
    assert result.quantized_nodes == 2 and result.float_layers == ()
    assert any("random" in w for w in result.warnings)


@pytest.mark.parametrize("method", ["distribution", "Distribution"])
def test_distribution_calibration_is_refused_for_int8(method: str) -> None:
    with pytest.raises(UserError, match="FP8"):
        QuantizeConfig(method=method)


def test_unknown_choices_are_user_errors() -> None:
    for kwargs in ({"mode": "int4"}, {"metric": "accuracy"}, {"max_drop_pct": -1}, {"method": "kl"}):
        with pytest.raises(UserError):
            QuantizeConfig(**kwargs)


def test_dynamic_int8_mlp_uses_integer_matmul_and_stays_accurate(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp-dyn.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8-dynamic"), random=2, measure_latency=False)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops and "MatMul" not in ops
    x = np.random.default_rng(7).standard_normal((16, 16)).astype(np.float32)
    assert _cos(_run(src, x), _run(out, x)) > 0.995
    assert result.drop_pct < 0.5 and result.calibration is None


def test_static_int8_mlp_is_accurate_with_top1(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp-int8.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8", metric="top1"), random=32, measure_latency=False)
    assert result.metric == "top1" and result.float_value == 1.0
    # The metric is 16 held-out rows (one flipped row is 6 %); the 4096 rows below are the real bar:
    # 0.972 with float outputs (0.966 when the output was still clipped to its calibration range).
    assert result.quantized_value >= 0.85
    x = np.random.default_rng(7).standard_normal((4096, 16)).astype(np.float32)
    assert (_run(src, x).argmax(1) == _run(out, x).argmax(1)).mean() >= 0.95
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_fp16_mlp_halves_weights_and_keeps_float32_io(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp-fp16.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="fp16"), random=2, measure_latency=False)
    model = onnx.load(str(out))
    assert {i.data_type for i in model.graph.initializer if i.name.startswith("w")} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(8).standard_normal((4, 16)).astype(np.float32)
    ref, got = _run(src, x), _run(out, x)
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)
    assert result.drop_pct < 0.01
    assert result.quantized_size_bytes < 0.7 * result.float_size_bytes


def test_bf16_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="bf16"):
        quantize_model(_mlp(tmp_path / "m.onnx"), tmp_path / "o.onnx", config=QuantizeConfig(mode="bf16"), random=1)


def test_sensitivity_finds_the_planted_outlier_layer(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx", outlier=True)
    res = sensitivity_analysis(src, config=QuantizeConfig(per_channel=False), random=4)
    assert res.layers[0].node == "fc2"
    assert res.layers[0].rank == 1 and res.layers[0].gain_pct > 5 * max(abs(s.gain_pct) for s in res.layers[1:])
    assert res.int8_drop_pct > 1.0  # the plant really hurts


def test_budgeted_search_keeps_only_the_outlier_layer_in_float(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx", outlier=True)
    out = tmp_path / "mlp-mixed.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8", per_channel=False, max_drop_pct=1.0),
                            random=32, measure_latency=False)
    assert result.meets_budget and result.drop_pct <= 1.0
    assert [f.node for f in result.float_layers] == ["fc2"]
    assert result.float_layers[0].sensitivity_rank == 1 and result.float_layers[0].reason
    model = onnx.load(str(out))
    # fc2 stays a float MatMul reading the float weight; the others read dequantized int8 weights
    fc2 = next(n for n in model.graph.node if n.name == "fc2")
    assert fc2.input[1] == "w2"
    assert result.quantized_nodes == 2
    x = np.random.default_rng(9).standard_normal((8, 16)).astype(np.float32)
    assert _cos(_run(src, x), _run(out, x)) > 0.99


def test_zero_time_budget_still_writes_the_best_model(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx", outlier=True)
    out = tmp_path / "mlp-budget0.onnx"
    config = QuantizeConfig(mode="int8", per_channel=False, max_drop_pct=1.0, time_budget_s=0)
    result = quantize_model(src, out, config=config, random=2, measure_latency=False)
    assert out.is_file() and result.search.stopped == "time budget"
    assert result.search.candidates == 1 and not result.meets_budget  # only the all-INT8 baseline
    assert read_name_map(onnx.load(str(out))) is not None
    _run(out, np.zeros((1, 16), np.float32))


def test_interrupt_keeps_the_best_model_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zhisuan.quantize import metrics

    calls = {"n": 0}
    real = metrics.OutputAgreement.__call__

    def flaky(self: metrics.OutputAgreement, path: Path) -> float:
        calls["n"] += 1
        if calls["n"] == 4:  # float, all-INT8, fc1 alone in float, then Ctrl-C
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(metrics.OutputAgreement, "__call__", flaky)
    src = _mlp(tmp_path / "mlp.onnx", outlier=True)
    out = tmp_path / "mlp-int.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8", per_channel=False, max_drop_pct=1.0),
                            random=2, measure_latency=False)
    assert result.interrupted and out.is_file()
    assert result.search.candidates == 2


def test_name_map_points_at_dequantized_values_and_composes(tmp_path: Path) -> None:
    src = _cnn(tmp_path / "cnn.onnx", opset=13)
    model = onnx.load(str(src))
    earlier = NameMap({"orig_x": "x", "orig_c1": "c1", "orig_r1": "r1", "orig_y": "y", "gone": "missing"}, "abc")
    write_name_map(model, earlier)
    onnx.save(model, str(src))
    out = tmp_path / "q.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8"), random=2, measure_latency=False)
    qmodel = onnx.load(str(out))
    nm = read_name_map(qmodel)
    assert nm.source_sha256 == "abc" and result.name_map_entries == len(nm.mapping)
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    # The Relu between the two quantized Convs stays a node (ORT fuses it at load time), so the
    # tensor named r1 really is the Relu's output, not conv1's unclipped output under r1's name
    # (the name trap of QDQ graphs); each float tensor maps to what its consumers see.
    assert producers["r1"].op_type == "Relu"
    assert producers[nm.mapping["orig_c1"]].op_type == "DequantizeLinear"
    assert producers[nm.mapping["orig_r1"]].op_type == "DequantizeLinear"
    assert producers[nm.mapping["orig_x"]].op_type == "DequantizeLinear"
    assert nm.mapping["orig_y"] == "y" and "gone" not in nm.mapping
    # and the mapped tensor carries the float value (up to int8 rounding)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    qmodel.graph.output.append(helper.make_tensor_value_info(nm.mapping["orig_r1"], TensorProto.FLOAT, None))
    sess = ort.InferenceSession(qmodel.SerializeToString(), providers=["CPUExecutionProvider"])
    r1_q = sess.run([nm.mapping["orig_r1"]], {"x": x})[0]
    fmodel = onnx.load(str(src))
    fmodel.graph.output.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, None))
    r1_f = ort.InferenceSession(fmodel.SerializeToString(), providers=["CPUExecutionProvider"]).run(["r1"], {"x": x})[0]
    assert _cos(r1_f, r1_q) > 0.995
    assert r1_q.min() >= 0  # the absorbed Relu: the range starts at zero


def test_calibration_from_npz_directory(tmp_path: Path) -> None:
    src = _mlp(tmp_path / "mlp.onnx")
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(11)
    for i in range(3):
        np.savez(data / f"{i}.npz", x=rng.standard_normal((4, 16)).astype(np.float32))
    result = quantize_model(src, tmp_path / "q.onnx", data=data, measure_latency=False)
    assert result.calibration.source.startswith("npz:") and result.calibration.samples == 12
    assert result.calibration.warning is None and result.drop_pct < 1.0


def test_cli_json_and_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zhisuan.cli.app import main

    src = _mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "cli.onnx"
    with pytest.raises(SystemExit) as ok:
        main(["quantize", str(src), "-o", str(out), "--random", "2", "--json"])
    assert ok.value.code in (0, None)
    data = json.loads(capsys.readouterr().out)
    assert data["output_path"] == str(out) and out.is_file() and data["latency"]["speedup"] > 0
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(src), "-o", str(out), "--method", "distribution"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("data_flag", "runtime_flag"), [("--data", "--runtime"), ("--calib", "--backend")])
def test_cli_shared_option_names_and_their_old_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       data_flag: str, runtime_flag: str) -> None:
    from zhisuan.cli.app import main

    src = _mlp(tmp_path / "mlp.onnx")
    data = tmp_path / "calib"
    data.mkdir()
    np.savez(data / "0.npz", x=np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32))
    with pytest.raises(SystemExit) as ok:
        main(["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--mode", "int8", data_flag, str(data),
              runtime_flag, "onnxruntime", "--json"])
    assert ok.value.code in (0, None)
    result = json.loads(capsys.readouterr().out)
    assert result["calibration"]["source"] == f"npz:{data}" and result["backend"] == "onnxruntime"
