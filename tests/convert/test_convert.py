"""zhisuan convert: torch factories, ONNX files and every target, each checked against its source."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from zhisuan.convert import ConvertResult, convert
from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.graph import read_name_map

HERE = Path(__file__).resolve().parent


def _mlp_onnx(path: Path, *, batch: int | str = "batch", opset: int = 13) -> Path:
    """x[B,8] -> MatMul(8x6) -> Add -> Relu -> y[B,6], with named intermediate tensors."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm_node"),
             helper.make_node("Add", ["mm", "b"], ["pre"], name="add_node"),
             helper.make_node("Relu", ["pre"], ["y"], name="relu_node")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 6])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_torch_factory_to_onnx_with_dynamic_batch_runs_at_batch_1_and_3(tmp_path) -> None:
    out = tmp_path / "net.onnx"
    result = convert("zs_factories:small_net", out, dynamic_batch=True)
    assert isinstance(result, ConvertResult)
    assert result.status == "ok" and result.exporter == "dynamo" and result.fallback_reason is None
    assert result.opset == 18 and result.checked_samples == 2 and result.checked_batches == (1, 3)
    assert 0.0 <= result.max_abs_error < 1e-5 and result.cosine > 0.99999
    assert result.output_paths == (str(out),) and result.to_dict()["target"] == "onnx"

    from zs_factories import small_net

    module, _ = small_net()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 8, 8)
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, module(x).detach().numpy(), atol=1e-5)
    # a PyTorch source has no tensor graph to map from; an inputs/outputs-only map would make the
    # composed maps of later steps (optimize, quantize) just as empty and layerwise compare blind
    assert read_name_map(onnx.load(str(out))) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    # so a later step's map describes the exported graph itself, inner tensors included
    from zhisuan.optimize import optimize_model

    optimized = optimize_model(str(out))
    inner = {t for n in onnx.load(str(out)).graph.node for t in n.output} - {"output"}
    assert inner and inner <= set(optimized.name_map.mapping)


def test_data_dependent_branch_is_diagnosed_and_nothing_is_written(tmp_path) -> None:
    out = tmp_path / "b.onnx"
    with pytest.raises(UserError) as info:
        convert("zs_factories:branchy", out)
    message = str(info.value)
    assert "control flow depends on input values" in message
    assert "if x.sum() > 0" in message and "torch.where / torch.cond" in message
    assert "baked in one branch: outputs differ by" in message
    assert not out.exists()


def test_allow_mismatch_keeps_the_file_with_a_mismatch_status(tmp_path) -> None:
    out = tmp_path / "b.onnx"
    result = convert("zs_factories:branchy", out, allow_mismatch=True, exporter="legacy")
    assert result.status == "mismatch" and out.is_file() and result.exporter == "legacy"
    assert result.max_abs_error > 0.1 and "legacy exporter" in (result.diagnosis or "")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["zhisuan.export_diagnosis"] == result.diagnosis


def test_item_shape_folded_by_legacy_is_diagnosed(tmp_path) -> None:
    with pytest.raises(UserError, match=r"folded the inputs into constants \(the graph has 0 of the module's 1"):
        convert("zs_factories:item_shape", tmp_path / "i.onnx", exporter="legacy")


def test_item_shape_with_a_branch_fails_both_exporters_with_a_diagnosis(tmp_path) -> None:
    with pytest.raises(UserError) as info:
        convert("zs_factories:item_branch", tmp_path / "i.onnx")
    message = str(info.value)
    assert "folded the inputs" in message and ".item()" in message
    assert "dynamo cannot capture it either" in message and "int(x.abs().sum().item())" in message


def test_factory_errors_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match=r"must return an nn\.Module"):
        convert("zs_factories:not_a_module", tmp_path / "m.onnx")
    with pytest.raises(UserError, match="no example inputs"):
        convert("zs_factories:small_net_no_inputs", tmp_path / "m.onnx")
    with pytest.raises(UserError, match="cannot import"):
        convert("no_such_module_zs:build", tmp_path / "m.onnx")
    with pytest.raises(UserError, match="never unpickles"):
        convert("weights.pth", tmp_path / "m.onnx")
    with pytest.raises(UserError, match="cannot tell the target"):
        convert("zs_factories:small_net", tmp_path / "m.bin")


def test_factory_with_input_shape_option(tmp_path) -> None:
    result = convert("zs_factories:small_net_no_inputs", tmp_path / "m.onnx", input_shapes=["image:2x3x8x8"],
                     exporter="legacy", opset=17)
    assert result.exporter == "legacy" and result.opset == 17 and result.checked_batches == (2,)
    assert result.max_abs_error < 1e-5


def test_onnx_to_openvino_ir_round_trip_keeps_float32_weights(tmp_path) -> None:
    pytest.importorskip("openvino")
    src = _mlp_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "ir" / "mlp.xml"
    result = convert(src, out, to="openvino")
    assert result.target == "openvino" and result.status == "ok"
    assert result.output_paths == (str(out), str(out.with_suffix(".bin")))
    assert result.max_abs_error < 1e-5 and result.checked_samples == 2
    # 8x6 + 6 float32 weights: f16 compression would halve the .bin
    assert out.with_suffix(".bin").stat().st_size >= (8 * 6 + 6) * 4

    from zhisuan.runtime import load_runtime

    x = np.random.default_rng(5).standard_normal((4, 8)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with load_runtime(out, "openvino") as rt:
        np.testing.assert_allclose(rt.run({"x": x})["y"], want, atol=1e-5)


def test_onnx_to_ort_optimized_and_ort_format(tmp_path) -> None:
    src = _mlp_onnx(tmp_path / "mlp.onnx")
    result = convert(src, tmp_path / "opt.onnx", to="ort")
    assert result.status == "ok" and result.max_abs_error < 1e-5
    assert any("extended" in n for n in result.notes)
    optimized = onnx.load(result.output_paths[0])
    # ORT fused MatMul+Add into one node; the name map keeps only names that survived
    assert len(optimized.graph.node) < 3
    name_map = read_name_map(optimized)
    assert name_map is not None and name_map.get("x") == "x" and name_map.get("y") == "y"
    assert name_map.get("mm") is None

    basic = convert(src, tmp_path / "basic.onnx", to="ort", ort_level="basic")
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(basic.output_paths[0]).graph.node)

    fmt = convert(src, tmp_path / "m.ort")
    assert fmt.target == "ort" and Path(fmt.output_paths[0]).read_bytes()[4:8] == b"ORTM"
    assert fmt.max_abs_error < 1e-5


def test_opset_conversion_keeps_names(tmp_path) -> None:
    src = _mlp_onnx(tmp_path / "mlp.onnx", opset=13)
    result = convert(src, tmp_path / "o17.onnx", opset=17)
    model = onnx.load(result.output_paths[0])
    assert result.opset == 17 and model.opset_import[0].version == 17
    assert [n.name for n in model.graph.node] == ["mm_node", "add_node", "relu_node"]
    name_map = read_name_map(model)
    assert name_map is not None and {"x", "w", "b", "mm", "pre", "y"} <= set(name_map.mapping)
    assert all(k == v for k, v in name_map.mapping.items())
    assert result.max_abs_error == 0.0


def test_onnx_dynamic_batch_is_checked_at_batch_3_against_stacked_source_runs(tmp_path) -> None:
    src = _mlp_onnx(tmp_path / "fixed.onnx", batch=1)
    result = convert(src, tmp_path / "dyn.onnx", dynamic_batch=True)
    assert result.checked_batches == (1, 3) and result.max_abs_error < 1e-6
    dims = onnx.load(result.output_paths[0]).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    session = ort.InferenceSession(result.output_paths[0], providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((5, 8), np.float32)})[0].shape == (5, 6)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_is_cleanly_unavailable(tmp_path) -> None:
    src = _mlp_onnx(tmp_path / "mlp.onnx")
    with pytest.raises(BackendUnavailableError, match="tensorrt is unavailable"):
        convert(src, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "zhisuan", "convert", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_cli_converts_a_factory_and_reports_json(tmp_path) -> None:
    proc = _cli("zs_factories:small_net", "-o", str(tmp_path / "n.xml"), "--exporter", "legacy", "--json",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["target"] == "openvino" and data["exporter"] == "legacy" and data["status"] == "ok"
    assert data["max_abs_error"] < 1e-4 and (tmp_path / "n.bin").is_file()


def test_cli_branch_and_tensorrt_fail_with_one_line_and_exit_1(tmp_path) -> None:
    proc = _cli("zs_factories:branchy", "-o", str(tmp_path / "b.onnx"), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "torch.where" in lines[0]
    src = _mlp_onnx(tmp_path / "mlp.onnx")
    if importlib.util.find_spec("tensorrt") is None:
        proc = _cli(str(src), "-o", str(tmp_path / "m.engine"), "--to", "tensorrt", cwd=tmp_path)
        assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
        assert "tensorrt is unavailable" in proc.stderr


@pytest.mark.slow
def test_zoo_efficientnet_to_openvino_is_close(tmp_path) -> None:
    pytest.importorskip("openvino")
    result = convert("efficientnet-lite0", tmp_path / "eff.xml", dynamic_batch=True)
    assert result.source_kind == "zoo" and result.status == "ok"
    assert result.checked_batches == (1, 3)
    assert result.max_abs_error < 1e-3 and result.cosine > 0.99999
