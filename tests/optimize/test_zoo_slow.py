"""The default pipeline on a real PP-OCR model (weights in Constant nodes, opset 11)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from zhisuan import zoo
from zhisuan.optimize import optimize_model


@pytest.mark.slow
def test_ppocr_cls_gets_smaller_with_same_outputs():
    model = onnx.load(zoo.export("ppocr-cls").path)
    assert any(n.op_type == "Constant" for n in model.graph.node)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 48, 192)).astype(np.float32)} for _ in range(2)]
    result = optimize_model(model, opset=13, feeds=feeds)
    out = result.model
    ops = {n.op_type for n in out.graph.node}
    assert "Constant" not in ops and "BatchNormalization" not in ops
    assert result.nodes_after < result.nodes_before / 2
    assert result.verification.passed and result.verification.worst.max_abs_error < 1e-4
    assert result.name_map.get(model.graph.output[0].name) == out.graph.output[0].name
