from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from zhisuan.errors import UserError
from zhisuan.graph import NameMap, load_model, read_name_map, save_model, write_name_map


def _model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compose_drops_tensors_removed_on_the_way() -> None:
    fold = NameMap({"x": "x", "conv": "bn", "bn": "bn", "gone": "tmp"}, source_sha256="abc")
    fuse = NameMap({"x": "x", "bn": "relu"})
    composed = fold.then(fuse)
    assert composed.mapping == {"x": "x", "conv": "relu", "bn": "relu"}
    assert composed.source_sha256 == "abc"
    assert composed.inverse() == {"x": ["x"], "relu": ["conv", "bn"]}


def test_name_map_round_trips_through_model_metadata(tmp_path: Path) -> None:
    model = _model()
    assert read_name_map(model) is None
    write_name_map(model, NameMap({"a": "b"}))
    write_name_map(model, NameMap({"x": "x", "y": "y"}, source_sha256="f00"))  # replaces
    path = save_model(model, tmp_path / "m.onnx")
    loaded = read_name_map(load_model(path))
    assert loaded == NameMap({"x": "x", "y": "y"}, source_sha256="f00")
    assert sum(p.key == "zhisuan.name_map" for p in load_model(path).metadata_props) == 1


def test_load_model_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(UserError, match="cannot read ONNX model"):
        load_model(bad)
