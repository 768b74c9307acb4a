"""compare: per-output agreement, tensor pairing, own vs carried error, first divergent node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from compare_graphs import NODES, convnet, weights

from zhisuan.compare import AgreementAccumulator, CompareConfig, Tolerance, agreement, compare_models
from zhisuan.compare.pairing import pair_tensors
from zhisuan.errors import UserError
from zhisuan.graph import NameMap, write_name_map

FEEDS = [{"x": np.random.default_rng(s).standard_normal((2, 3, 8, 8)).astype(np.float32)} for s in range(3)]


def _perturbed() -> onnx.ModelProto:
    params = weights()
    rng = np.random.default_rng(42)
    params["w2"] = params["w2"] + 0.3 * rng.standard_normal(params["w2"].shape).astype(np.float32) * params["w2"].std()
    return convnet(params=params)


def _zhisuan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True, timeout=120)


def test_accumulator_matches_agreement_over_samples() -> None:
    rng = np.random.default_rng(0)
    refs = [rng.standard_normal((4, 10)) for _ in range(3)]
    cands = [r + 0.01 * rng.standard_normal(r.shape) for r in refs]
    acc = AgreementAccumulator(Tolerance(atol=0.02, rtol=0.0, min_cosine=0.99))
    for r, c in zip(refs, cands, strict=True):
        acc.add(r, c)
    want = agreement(np.concatenate(refs), np.concatenate(cands))
    got = acc.result()
    assert got.cosine == pytest.approx(want.cosine, rel=1e-12)
    assert got.max_abs_error == pytest.approx(want.max_abs_error)
    assert got.mean_abs_error == pytest.approx(want.mean_abs_error)
    assert got.top1_agreement == pytest.approx(want.top1_agreement)
    outside = int(np.count_nonzero(np.abs(np.concatenate(refs) - np.concatenate(cands)) > 0.02))
    assert acc.violations == outside > 0 and not acc.within()


def test_equal_infinities_agree() -> None:
    acc = AgreementAccumulator()
    acc.add(np.array([-np.inf, 1.0, 2.0]), np.array([-np.inf, 1.0, 2.0]))
    assert acc.within() and acc.result().max_abs_error == 0.0


def test_identical_models_agree_everywhere(save) -> None:
    ref, cand = save(convnet(), "ref.onnx"), save(convnet(), "cand.onnx")
    result = compare_models(ref, cand, CompareConfig(layerwise=True), feeds=FEEDS)
    assert result.within_tolerance and result.first_divergence is None
    assert result.pairing["method"] == "identity"
    assert [layer.node for layer in result.layers] == [name for name, *_ in NODES]
    for layer in result.layers:
        assert layer.own.metrics.cosine == pytest.approx(1.0) and layer.total.metrics.max_abs_error == 0.0
    assert result.samples == 3 and result.outputs[0].measurement.metrics.elements == 3 * 2 * 4 * 8 * 8


def test_planted_divergence_is_found_and_downstream_error_is_carried(save) -> None:
    ref, cand = save(convnet(), "ref.onnx"), save(_perturbed(), "cand.onnx")
    result = compare_models(ref, cand, CompareConfig(layerwise=True), feeds=FEEDS)
    assert not result.within_tolerance
    first = result.first_divergence
    assert first is not None and (first.node, first.op_type, first.output, first.ref_tensor) == (
        "conv2", "Conv", "conv2_out", "conv2_out"
    )
    assert result.to_dict()["first_divergence"]["node"] == "conv2"
    layers = {layer.node: layer for layer in result.layers}
    assert not layers["conv1"].diverges and layers["conv1"].total.metrics.max_abs_error == 0.0
    for name in ("relu2", "conv3"):  # victims: tiny own error, the error is carried in
        own, carried = layers[name].own.metrics, layers[name].carried
        assert own.max_abs_error < 1e-5 and not layers[name].diverges
        assert carried.max_abs_error > 1000 * max(own.max_abs_error, 1e-7)
        assert not layers[name].total.within_tolerance


def test_renamed_tensors_are_paired_by_topology_not_by_name() -> None:
    # The Relu output is named like the Conv output and vice versa (the quantizer trap).
    swapped = convnet(rename={"conv1_out": "relu1_out", "relu1_out": "conv1_out"})
    pairing = pair_tensors(convnet(), swapped)
    assert pairing.method == "topology"
    assert pairing.pairs["relu1_out"] == "conv1_out"  # CAND's relu1_out is a Conv output
    assert pairing.pairs["conv1_out"] == "relu1_out"
    assert pairing.pairs["y"] == "y" and not pairing.unpaired_cand and not pairing.unpaired_ref


def test_renamed_candidate_compares_clean(save) -> None:
    swapped = convnet(rename={"conv1_out": "relu1_out", "relu1_out": "conv1_out"})
    result = compare_models(save(convnet(), "ref.onnx"), save(swapped, "cand.onnx"), CompareConfig(layerwise=True), feeds=FEEDS)
    assert result.within_tolerance and result.first_divergence is None
    by_node = {layer.node: layer for layer in result.layers}
    assert by_node["conv1"].ref_tensor == "conv1_out" and by_node["relu1"].ref_tensor == "relu1_out"
    assert all(layer.total.metrics.max_abs_error == 0.0 for layer in result.layers)


def test_name_map_in_candidate_metadata_pairs_what_topology_cannot(save) -> None:
    # CAND computes relu1 as Clip(min=0): same values, another op, so topology leaves it unpaired.
    nodes = [n if n[0] != "relu1" else ("clip1", "Clip", ["conv1_out", "zero"], "t_clip") for n in NODES]
    nodes = [(n, op, ["t_clip" if i == "relu1_out" else i for i in ins], out) for n, op, ins, out in nodes]
    params = {**weights(), "zero": np.zeros((), np.float32)}
    cand = convnet(params=params, nodes=nodes)
    assert "t_clip" not in pair_tensors(convnet(), cand).pairs
    write_name_map(cand, NameMap({"x": "x", "conv1_out": "conv1_out", "relu1_out": "t_clip", "conv2_out": "conv2_out",
                                  "relu2_out": "relu2_out", "y": "y"}))
    pairing = pair_tensors(convnet(), cand)
    assert pairing.method == "name_map" and pairing.pairs["t_clip"] == "relu1_out"
    result = compare_models(save(convnet(), "ref.onnx"), save(cand, "cand.onnx"), CompareConfig(layerwise=True), feeds=FEEDS)
    assert result.within_tolerance and result.first_divergence is None
    clip = next(layer for layer in result.layers if layer.node == "clip1")
    assert clip.ref_tensor == "relu1_out" and clip.total.metrics.max_abs_error == 0.0


def test_qdq_candidate_is_paired_through_quantize_dequantize(save, tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"x": f["x"][:1]} for f in FEEDS])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    ref = save(convnet(), "ref.onnx")
    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(ref), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    cand = onnx.load(str(qdq))
    pairing = pair_tensors(convnet(), cand)
    producers = {out: node.op_type for node in cand.graph.node for out in node.output}
    conv_outputs = {c: r for c, r in pairing.pairs.items() if producers.get(c) == "Conv"}
    # The quantizer drops the Relus; each CAND Conv output pairs with REF's Conv output, whatever its name.
    assert sorted(conv_outputs.values()) == ["conv1_out", "conv2_out", "y"]
    assert not any(c.endswith("DequantizeLinear_Output") for c in pairing.pairs)
    result = compare_models(ref, qdq, CompareConfig(layerwise=True, atol=1e-5, rtol=1e-5), feeds=FEEDS)
    # Three Conv layers, then the graph output after its own QuantizeLinear/DequantizeLinear.
    assert [layer.op_type for layer in result.layers] == ["Conv", "Conv", "Conv", "DequantizeLinear"]
    assert all(layer.own.metrics.cosine > 0.99 for layer in result.layers)
    # The first layer's own error is its quantization error (input and weight QDQ are part of it).
    assert result.first_divergence is not None and result.first_divergence.node == result.layers[0].node
    assert any("QuantizeLinear" in name for name in result.layers[0].segment)


def test_layerwise_refuses_torch(save) -> None:
    ref = save(convnet(), "ref.onnx")
    with pytest.raises(UserError, match="layerwise"):
        compare_models(ref, ref, CompareConfig(layerwise=True, cand_runtime="torch"), feeds=FEEDS)


def test_mismatched_inputs_are_a_user_error(save) -> None:
    other = convnet(rename={"x": "image"})
    with pytest.raises(UserError, match="different inputs"):
        compare_models(save(convnet(), "ref.onnx"), save(other, "cand.onnx"), feeds=FEEDS)


def test_cli_exit_codes_json_and_html(save, tmp_path: Path) -> None:
    ref, same, bad = save(convnet(), "ref.onnx"), save(convnet(), "same.onnx"), save(_perturbed(), "bad.onnx")
    ok = _zhisuan("compare", str(ref), str(same), "--random", "2", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["within_tolerance"] is True

    report = tmp_path / "report.html"
    out = _zhisuan("compare", str(ref), str(bad), "--layerwise", "--json", "--html", str(report))
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["first_divergence"]["node"] == "conv2" and data["first_divergence"]["op_type"] == "Conv"
    assert [layer["node"] for layer in data["layers"]] == [name for name, *_ in NODES]
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<b><code>conv2</code></b>" in html

    err = _zhisuan("compare", str(ref), str(tmp_path / "missing.onnx"))
    assert err.returncode == 1  # an input error, as for every command (README "exit" table)
    assert err.stderr.strip().splitlines() == [f"error: model file not found: {tmp_path / 'missing.onnx'}"]


def test_compare_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\nfrom zhisuan.cli.app import main\ntry:\n    main(['compare', '--help'])\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None)\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'onnxruntime', 'openvino', 'onnx') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Example:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="
