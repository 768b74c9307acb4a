"""compare --layerwise on a real model: MiniLM-L6 against its int8 dynamic-quantized copy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from zhisuan.compare import CompareConfig, compare_models


@pytest.mark.slow
def test_minilm_int8_dynamic_layerwise(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from zhisuan import zoo

    ref = zoo.export("minilm-l6").path
    cand = tmp_path / "minilm-int8.onnx"
    quantize_dynamic(str(ref), str(cand), weight_type=QuantType.QInt8)
    config = CompareConfig(layerwise=True, random=2, atol=0.05, rtol=0.05, min_cosine=0.99)
    started = time.perf_counter()
    first = compare_models(ref, cand, config)
    elapsed = time.perf_counter() - started
    second = compare_models(ref, cand, config)
    assert elapsed < 60  # the target is 30 s on a 2-core machine; slack for a busy CI runner
    assert first.pairing["method"] == "topology" and not first.pairing["unpaired_cand"]
    quantized = [layer for layer in first.layers if layer.op_type == "MatMulInteger"]
    assert len(quantized) == 36  # every dynamically quantized MatMul is a layer of its own
    assert all(layer.ref_tensor == layer.output for layer in quantized)  # the quantizer kept the names
    # int8 of activations costs each MatMul a little (measured: worst own cosine ~0.986, FFN output)
    assert all(layer.own.metrics.cosine > 0.95 for layer in quantized)
    a, b = first.first_divergence, second.first_divergence
    assert (a is None) == (b is None)
    if a is not None:
        assert (a.node, a.output) == (b.node, b.output)
        assert a.own.within_tolerance is False
        assert all(not layer.diverges for layer in first.layers[: a.layer_index])
