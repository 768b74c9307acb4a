"""Static INT8 keeps graph outputs in float and leaves no unused initializers; ``--exclude`` names
real nodes. Tiny graphs built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from zhisuan.errors import UserError
from zhisuan.quantize import QuantizeConfig, quantize_model

ort = pytest.importorskip("onnxruntime")


def _head(path: Path) -> Path:
    """x[N,16] -> MatMul fc1 -> Relu -> Gemm fc2 (+ bias) -> y[N,8]: the output is a compute node's."""
    rng = np.random.default_rng(1)
    w1 = (rng.standard_normal((16, 32)) * 0.5).astype(np.float32)
    w2 = (rng.standard_normal((32, 8)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="act1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _calibration(directory: Path, *, batches: int = 2, rows: int = 4) -> Path:
    """Uniform [-1, 1] rows that reach both ends, so the input's own range is the held-out data's."""
    directory.mkdir()
    rng = np.random.default_rng(11)
    for i in range(batches):
        x = rng.uniform(-1, 1, (rows, 16)).astype(np.float32)
        x[0, :2] = (-1.0, 1.0)
        np.savez(directory / f"{i}.npz", x=x)
    return directory


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _heldout_error(src: Path, out: Path) -> float:
    """Worst absolute error on 512 fresh rows of the calibration distribution (their outputs reach
    further than the 8 calibration rows' did)."""
    x = np.random.default_rng(99).uniform(-1, 1, (512, 16)).astype(np.float32)
    return float(np.abs(_run(src, x) - _run(out, x)).max())


def test_static_int8_keeps_graph_outputs_float_and_drops_unused_initializers(tmp_path: Path) -> None:
    src = _head(tmp_path / "head.onnx")
    data = _calibration(tmp_path / "calib")
    out = tmp_path / "q.onnx"
    quantize_model(src, out, config=QuantizeConfig(mode="int8"), data=data, measure_latency=False)
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    assert producers["y"].op_type == "Gemm"  # no QuantizeLinear/DequantizeLinear pair clipping the output
    assert producers["y"].input[0].endswith("DequantizeLinear_Output")  # fc2 still reads int8 activations
    read = {name for node in model.graph.node for name in node.input}
    assert [i.name for i in model.graph.initializer if i.name not in read] == []

    clipped = tmp_path / "clipped.onnx"
    quantize_model(src, clipped, config=QuantizeConfig(mode="int8", quantize_outputs=True), data=data,
                   measure_latency=False)
    assert {o: n for n in onnx.load(str(clipped)).graph.node for o in n.output}["y"].op_type == "DequantizeLinear"
    # the output's calibration range is narrower than fresh data: clipping there costs accuracy
    freed, clipped_error = _heldout_error(src, out), _heldout_error(src, clipped)
    assert freed < 0.3 * clipped_error, (freed, clipped_error)


def test_output_also_read_inside_the_graph_keeps_its_quantized_copy_for_the_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w1 = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["mid"], name="fc1"),
        helper.make_node("MatMul", ["mid", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("mid", TensorProto.FLOAT, ["N", 16]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    src = tmp_path / "two.onnx"
    onnx.save(model, str(src))
    out = tmp_path / "q.onnx"
    quantize_model(src, out, config=QuantizeConfig(mode="int8"), data=_calibration(tmp_path / "calib"),
                   measure_latency=False)
    q = onnx.load(str(out))
    producers = {o: n for n in q.graph.node for o in n.output}
    assert producers["mid"].op_type == "MatMul" and producers["y"].op_type == "MatMul"
    fc2_in = producers[next(n for n in q.graph.node if n.name == "fc2").input[0]]
    assert fc2_in.op_type == "DequantizeLinear"  # fc2 still reads the int8 copy of mid
    x = np.random.default_rng(5).uniform(-1, 1, (64, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(ref, sess.run(None, {"x": x}), strict=True):
        cosine = float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cosine > 0.99, cosine


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic"])
def test_unknown_excluded_node_is_a_user_error_naming_it(tmp_path: Path, mode: str) -> None:
    src = _head(tmp_path / "head.onnx")
    with pytest.raises(UserError, match="NO_SUCH_NODE") as exc:
        quantize_model(src, tmp_path / "q.onnx", random=1, measure_latency=False,
                       config=QuantizeConfig(mode=mode, nodes_to_exclude=("fc1", "NO_SUCH_NODE", "ALSO_MISSING")))
    message = str(exc.value)
    assert "ALSO_MISSING" in message and "'fc1'" not in message.split("(")[0] and "\n" not in message
    assert not (tmp_path / "q.onnx").exists()


def test_cli_unknown_exclude_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zhisuan.cli.app import main

    src = _head(tmp_path / "head.onnx")
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--random", "1", "--exclude", "NO_SUCH_NODE"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "NO_SUCH_NODE" in err[0]


def test_excluding_a_node_that_preprocessing_folded_away_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "scale": np.ones(4, np.float32),
              "beta": np.zeros(4, np.float32), "mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["y"], name="bn"),
    ]
    graph = helper.make_graph(
        nodes, "cbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "cbn.onnx"))
    with pytest.raises(UserError, match="'bn' no longer exist after preprocessing"):
        quantize_model(tmp_path / "cbn.onnx", tmp_path / "q.onnx", random=1, measure_latency=False,
                       config=QuantizeConfig(mode="int8", nodes_to_exclude=("bn",)))
