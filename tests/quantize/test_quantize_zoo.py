"""End to end on a real shipped model: PP-OCR direction classifier (Constant weights, opset 11)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from zhisuan.graph import read_name_map
from zhisuan.quantize import QuantizeConfig, quantize_model


@pytest.mark.slow
def test_ppocr_cls_int8_with_zoo_metric_budget(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from zhisuan import zoo

    try:
        zoo.get("ppocr-cls").weights.path()
    except Exception as exc:  # the model package is an optional install
        pytest.skip(f"rapidocr not installed: {exc}")
    out = tmp_path / "cls-int8.onnx"
    config = QuantizeConfig(mode="int8", metric="zoo:ppocr-cls", max_drop_pct=2.0, time_budget_s=20)
    result = quantize_model("ppocr-cls", out, config=config, measure_latency=False)
    assert result.calibration.source == "zoo:ppocr-cls" and result.calibration.warning is None
    assert result.preprocessing.opset_before == 11 and result.preprocessing.opset_after == 13
    all_int8 = result.search.history[0]
    assert all_int8.float_nodes == () and result.drop_pct <= all_int8.drop_pct  # never worse than plain INT8
    assert result.meets_budget == (result.drop_pct <= 2.0)
    # the written file scores what the result says, through the zoo's own evaluator
    assert zoo.evaluate("ppocr-cls", model=out).value == pytest.approx(result.quantized_value)
    model = onnx.load(str(out))
    int8_weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) >= 2]
    assert len(int8_weights) >= result.quantized_nodes > 0  # Constant weights were really quantized
    assert len(read_name_map(model).mapping) == result.name_map_entries > 0


@pytest.mark.slow
def test_efficientnet_int8_is_one_integer_chain_and_keeps_its_outputs(tmp_path: Path) -> None:
    """The default static policy on a real CNN: the 17 "same" Pads fold into their Convs, every ReLU6
    and residual Add joins the integer chain, and the logits stay close to FP32 (cosine 0.77 when
    only Conv/MatMul/Gemm were quantized and each ReLU6 ran in float on unclipped int8 ranges)."""
    pytest.importorskip("onnxruntime")
    from zhisuan import zoo

    try:
        zoo.get("efficientnet-lite0").weights.path()
    except Exception as exc:  # the model package is an optional install
        pytest.skip(f"efficientnet-lite0 weights not installed: {exc}")
    out = tmp_path / "eff-int8.onnx"
    result = quantize_model("efficientnet-lite0", out, config=QuantizeConfig(mode="int8"), measure_latency=False)
    assert result.preprocessing.changes["fold-pad-into-conv"] == {"pads_folded": 17}
    assert result.selection.op_counts == {"Add": 9, "Clip": 33, "Conv": 49, "Gemm": 1, "GlobalAveragePool": 1,
                                             "Reshape": 1}
    # mean output cosine on held-out photos: > 0.97 with 8-bit weights (VNNI CPUs, Arm); 0.905 measured
    # with the 7-bit weights used on x86 CPUs without VNNI (8-bit ones saturate there: cosine 0.795)
    assert result.quantized_value > (0.88 if result.config.weights_7bit else 0.97)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Pad" not in ops and ops.count("Clip") == 33  # ReLU6 nodes kept; ORT fuses them at load
    assert zoo.evaluate("efficientnet-lite0", model=out).value >= zoo.evaluate("efficientnet-lite0").value - 0.01
