"""The default policy on tiny graphs built here: Pad folding, integer islands, the auto choice,
real entropy calibration, the OpenVINO backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from zhisuan.errors import UserError
from zhisuan.quantize import QuantizeConfig, quantize_model
from zhisuan.quantize.policy import Contender, choose, fold_pad_into_conv, select_static_nodes

ort = pytest.importorskip("onnxruntime")


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _save(nodes: list, inits: list, out_shape: list, path: Path, *, opset: int = 13, in_shape: list | None = None) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape or ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _mobile_block(path: Path) -> Path:
    """TF-style "same" Pad -> strided Conv -> ReLU6 -> Conv -> residual Add -> GAP -> Flatten -> Gemm,
    plus a side branch Relu -> ReduceMean (an op ORT has no int8 kernel for) into the output."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.0, np.float32), "pad_value"),
        numpy_helper.from_array(_w(rng, 8, 3, 3, 3), "w1"), numpy_helper.from_array(_w(rng, 8), "b1"),
        numpy_helper.from_array(_w(rng, 8, 8, 1, 1), "w2"), numpy_helper.from_array(_w(rng, 8), "b2"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(_w(rng, 8, 5), "wf"), numpy_helper.from_array(_w(rng, 5), "bf"),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads", "pad_value"], ["p"], name="pad", mode="constant"),
        helper.make_node("Conv", ["p", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="relu6"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["a1", "c2"], ["s"], name="residual"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc"),
        helper.make_node("Relu", ["s"], ["sr"], name="side_relu"),
        helper.make_node("ReduceMean", ["sr"], ["m"], name="side_mean", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "one"], ["m1"], name="side_unsqueeze"),
        helper.make_node("Add", ["logits", "m1"], ["y"], name="out_add"),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    return _save(nodes, inits, ["N", 5], path)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


# --- Pad folding ------------------------------------------------------------------------------


def test_zero_spatial_pad_folds_into_the_conv_exactly(tmp_path: Path) -> None:
    src = _mobile_block(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    assert fold_pad_into_conv(model) == 1
    assert "Pad" not in {n.op_type for n in model.graph.node}
    conv = next(n for n in model.graph.node if n.name == "conv1")
    assert conv.input[0] == "x" and list(helper.get_attribute_value(conv.attribute[-1])) == [0, 0, 1, 1]
    assert not {"pads", "pad_value"} & {i.name for i in model.graph.initializer}
    folded = tmp_path / "folded.onnx"
    onnx.save(model, str(folded))
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(folded, x), _run(src, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["nonzero-value", "channel-pad", "reflect", "second-reader"])
def test_pads_that_are_not_a_conv_padding_stay(tmp_path: Path, case: str) -> None:
    rng = np.random.default_rng(2)
    pads = [0, 1, 0, 0, 0, 1, 0, 0] if case == "channel-pad" else [0, 0, 1, 1, 0, 0, 1, 1]
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads"),
             numpy_helper.from_array(np.array(1.0 if case == "nonzero-value" else 0.0, np.float32), "v"),
             numpy_helper.from_array(_w(rng, 4, 5 if case == "channel-pad" else 3, 3, 3), "w")]
    mode = "reflect" if case == "reflect" else "constant"
    nodes = [helper.make_node("Pad", ["x", "pads"] + ([] if case == "reflect" else ["v"]), ["p"], name="pad", mode=mode),
             helper.make_node("Conv", ["p", "w"], ["c"], name="conv")]
    if case == "second-reader":
        nodes.append(helper.make_node("ReduceMean", ["p"], ["m"], name="mean", keepdims=0))
        nodes.append(helper.make_node("Add", ["c", "m"], ["y"], name="add"))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"], name="id"))
    model = onnx.load(str(_save(nodes, inits, None, tmp_path / "p.onnx")))
    assert fold_pad_into_conv(model) == 0
    assert "Pad" in {n.op_type for n in model.graph.node}


# --- integer islands --------------------------------------------------------------------------


def test_islands_quantize_the_chain_between_int8_ops_and_leave_the_float_branch(tmp_path: Path) -> None:
    model = onnx.load(str(_mobile_block(tmp_path / "m.onnx")))
    fold_pad_into_conv(model)
    sel = select_static_nodes(model)
    assert set(sel.compute) == {"conv1", "conv2", "fc"}
    # ReLU6, the residual Add, pooling and Flatten lead from int8 ops to int8 ops: quantized
    assert {"relu6", "residual", "gap", "flatten"} == set(sel.chain)
    # the side Relu only reaches ReduceMean (no int8 kernel): quantizing it would add a rounding
    # for nothing, so it stays float, as do the ops after the float op and the graph output
    assert not {"side_relu", "side_unsqueeze", "out_add"} & set(sel.chain)
    # keeping fc in float takes the chain that only led to it out of the island; ReLU6 still feeds conv2
    without = select_static_nodes(model, exclude=["fc"])
    assert set(without.compute) == {"conv1", "conv2"} and set(without.chain) == {"relu6"}


def test_static_int8_runs_the_mobile_block_as_one_integer_chain(tmp_path: Path) -> None:
    src = _mobile_block(tmp_path / "m.onnx")
    out = tmp_path / "q.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8", metric="cosine"), random=8,
                            measure_latency=False)
    assert result.preprocessing.changes["fold-pad-into-conv"] == {"pads_folded": 1}
    assert result.selection.op_counts["Clip"] == 1 and len(result.selection.compute) == 3
    qmodel = onnx.load(str(out))
    ops = [n.op_type for n in qmodel.graph.node]
    assert "Pad" not in ops
    # ReLU6 stays a node reading conv1's output rounded onto the ReLU6 range (shared scale): the
    # numbers of an absorbed activation, the names of the float graph
    clip = next(n for n in qmodel.graph.node if n.op_type == "Clip")
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    dq_in = producers[clip.input[0]]
    q_out = next(n for n in qmodel.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == clip.output[0])
    assert dq_in.op_type == "DequantizeLinear" and dq_in.input[1:] == q_out.input[1:]
    # ORT fuses the chain: no float Conv/Clip/GlobalAveragePool is left after its QDQ transformer
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert {"QLinearConv", "QLinearGlobalAveragePool"} <= fused and not {"Conv", "Clip", "GlobalAveragePool"} & fused
    x = np.random.default_rng(4).standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref, got = _run(src, x), _run(out, x)
    assert float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99
    assert not np.array_equal(ref, got)


def test_activations_after_a_non_compute_producer_are_folded(tmp_path: Path) -> None:
    """Conv -> Add -> Relu -> Conv: the Relu after the Add is folded into the Add's output range (ORT
    would not fuse the explicit form: a requantization that cost ResNet-50 28 % of its speed)."""
    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array(_w(rng, 3, 3, 3, 3), "w1"), numpy_helper.from_array(_w(rng, 3, 3, 3, 3), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    src = _save(nodes, inits, ["N", 3, 16, 16], tmp_path / "res.onnx")
    out = tmp_path / "q.onnx"
    quantize_model(src, out, config=QuantizeConfig(mode="int8"), random=8, measure_latency=False)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Relu" not in ops and "Add" in ops
    x = np.random.default_rng(10).standard_normal((2, 3, 16, 16)).astype(np.float32)
    ref, got = _run(src, x), _run(out, x)
    assert float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99


# --- the auto choice --------------------------------------------------------------------------


def _c(name: str, drop: float, ms: float, budget: float = 1.0) -> Contender:
    return Contender(name, 1 - drop / 100, drop, drop <= budget, ms, ms * 0.9, ms * 1.1)


def test_choose_the_fastest_within_budget_else_float() -> None:
    f = _c("fp32", 0.0, 10.0)
    best, reason = choose([f, _c("int8", 0.5, 4.0), _c("int8-dynamic", 0.0, 6.0)], budget_pct=1.0)
    assert best.name == "int8" and "x2.50" in reason
    best, reason = choose([f, _c("int8", 6.0, 4.0), _c("int8-dynamic", 0.2, 8.0)], budget_pct=1.0)
    assert best.name == "int8-dynamic" and "int8: drop 6.00 % > budget 1 %" in reason
    # slower than float, or faster by less than the noise margin: float is kept, and the reason says why
    best, reason = choose([f, _c("int8", 0.0, 13.0), _c("int8-dynamic", 0.0, 9.8)], budget_pct=1.0)
    assert best.name == "fp32"
    assert "int8: x0.77 the float speed" in reason and "int8-dynamic: x1.02" in reason
    with pytest.raises(ValueError):
        choose([_c("int8", 0.0, 1.0)], budget_pct=1.0)


def _fake_latency(speed: dict[str, float]):
    from zhisuan.quantize.metrics import Timing

    def latency(paths: dict[str, Path], feed: dict, **_: object) -> dict[str, Timing]:
        return {k: Timing(speed.get(k, 10.0), speed.get(k, 10.0), speed.get(k, 10.0), 1) for k in paths}

    return latency


@pytest.mark.parametrize("int8_ms, expect", [(4.0, "int8"), (15.0, "fp32")])
def test_auto_writes_the_choice_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, int8_ms: float,
                                             expect: str) -> None:
    from zhisuan.quantize import api

    # timing is the one input of the choice that a test cannot make deterministic, so it is faked
    monkeypatch.setattr(api, "latency_ms", _fake_latency({"fp32": 10.0, "int8": int8_ms, "int8-dynamic": 9.9}))
    src = _mobile_block(tmp_path / "m.onnx")
    out = tmp_path / "auto.onnx"
    result = quantize_model(src, out, random=8)
    assert result.mode == "auto" and result.chosen == expect
    assert [c.name for c in result.policy.contenders] == ["fp32", "int8", "int8-dynamic"]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    if expect == "int8":
        assert "QuantizeLinear" in ops and result.latency.speedup == pytest.approx(2.5)
        assert not any("float model" in w for w in result.warnings)
    else:
        assert "QuantizeLinear" not in ops and result.quantized_nodes == 0 and result.drop_pct == 0
        assert "int8: x0.67 the float speed" in result.policy.reason
        assert any("is the float model" in w for w in result.warnings)
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert _run(out, x).shape == (2, 5)


def test_auto_budget_defaults_per_metric() -> None:
    assert QuantizeConfig().budget_pct == 2.0  # cosine
    assert QuantizeConfig(metric="top1").budget_pct == 1.0
    assert QuantizeConfig(max_drop_pct=3).budget_pct == 3
    assert QuantizeConfig(mode="int8").budget_pct is None
    with pytest.raises(UserError, match="backend"):
        QuantizeConfig(backend="tensorrt")


# --- calibration ------------------------------------------------------------------------------


def test_entropy_calibration_really_searches_thresholds(tmp_path: Path) -> None:
    """quantize_static's Entropy keeps 128 bins for 128 quantized bins: its KL search has one
    candidate and equals MinMax. Ours passes 2048 bins, so a heavy-tailed activation is clipped."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(_w(rng, 16, 16), "w1"), numpy_helper.from_array(_w(rng, 16, 4), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]
    src = _save(nodes, inits, ["N", 4], tmp_path / "mlp.onnx", in_shape=["N", 16])
    data = tmp_path / "calib.npz"
    x = rng.standard_normal((256, 16)).astype(np.float32)
    x[0, 0] = 60.0  # one outlier
    np.savez(data, x=x)

    def scale_of(method: str) -> float:
        out = tmp_path / f"{method}.onnx"
        quantize_model(src, out, config=QuantizeConfig(mode="int8", method=method), data=data, measure_latency=False)
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
        return float(inits["x_scale"])

    minmax, entropy = scale_of("minmax"), scale_of("entropy")
    assert minmax == pytest.approx((60.0 - x.min()) / 255, rel=1e-3)
    assert entropy < 0.5 * minmax


def test_zoo_calibration_inputs_of_reference_models() -> None:
    from zhisuan import zoo

    images = zoo.get("resnet50").realistic_inputs("calib", batches=1, seed=7)
    assert images[0]["image"].shape == (4, 3, 224, 224) and images[0]["image"].dtype == np.float32
    bert = zoo.get("bert-base")
    text = bert.realistic_inputs("calib", batches=2, seed=7)
    assert len(text) == 2 and set(text[0]) == {"input_ids", "attention_mask", "token_type_ids"}
    other = bert.realistic_inputs("calib", batches=2, seed=8)
    assert not np.array_equal(text[0]["input_ids"], other[0]["input_ids"])


# --- OpenVINO ---------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_backend_scores_and_times_on_openvino(tmp_path: Path) -> None:
    src = _mobile_block(tmp_path / "m.onnx")
    out = tmp_path / "ov.onnx"
    result = quantize_model(src, out, config=QuantizeConfig(mode="int8", backend="openvino"), random=8)
    assert result.backend == "openvino" and result.latency.backend == "openvino"
    assert result.quantized_value > 0.99
    from zhisuan.runtime import load_runtime

    x = np.random.default_rng(8).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with load_runtime(out, "openvino", intra_op_threads=1) as rt:
        got = rt.run({"x": x})["y"]
    ref = _run(src, x)
    assert float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99


def test_a_search_candidate_with_every_layer_in_float_is_the_float_model(tmp_path: Path) -> None:
    from zhisuan.quantize.engine import Int8Builder

    src = _mobile_block(tmp_path / "m.onnx")
    builder = Int8Builder(src, QuantizeConfig(mode="int8"), [], tmp_path)
    out = builder.build(tmp_path / "all-float.onnx", ["conv1", "conv2", "fc"])
    assert onnx.load(str(out)) == onnx.load(str(src))
    with pytest.raises(UserError, match="every quantizable node is excluded"):
        Int8Builder(src, QuantizeConfig(mode="int8", nodes_to_exclude=("conv1", "conv2", "fc")), [], tmp_path).build(
            tmp_path / "none.onnx")
