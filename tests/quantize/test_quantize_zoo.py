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
    result = quantize_model("ppocr-cls", out, config=QuantizeConfig(metric="zoo:ppocr-cls", max_drop_pct=2.0,
                                                                    time_budget_s=20), measure_latency=False)
    assert result.calibration["source"] == "zoo:ppocr-cls" and result.calibration["warning"] is None
    assert result.preprocessing["opset_before"] == 11 and result.preprocessing["opset_after"] == 13
    all_int8 = result.search["history"][0]
    assert all_int8["float_nodes"] == [] and result.drop_pct <= all_int8["drop_pct"]  # never worse than plain INT8
    assert result.meets_budget == (result.drop_pct <= 2.0)
    # the written file scores what the result says, through the zoo's own evaluator
    assert zoo.evaluate("ppocr-cls", model=out).value == pytest.approx(result.quantized_value)
    model = onnx.load(str(out))
    int8_weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) >= 2]
    assert len(int8_weights) >= result.quantized_nodes > 0  # Constant weights were really quantized
    assert len(read_name_map(model).mapping) == result.name_map_entries > 0
