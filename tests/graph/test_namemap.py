from __future__ import annotations

import json
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


def test_stored_form_is_compact_and_round_trips() -> None:
    import onnx

    from zhisuan.graph.namemap import decode_name_map, encode_name_map

    names = [f"/encoder/layer.{i}/attention/self/MatMul_output_0" for i in range(300)]
    mapping = {n: n for n in names} | {"a": "b"}
    nm = NameMap(mapping, "abc")
    text = encode_name_map(nm)
    assert len(text) < len(json.dumps(nm.to_dict())) / 5  # repeated prefixes compress
    back = decode_name_map(text)
    assert dict(back.mapping) == mapping and back.source_sha256 == "abc"
    # the plain form 1 written by earlier versions is still read
    assert dict(decode_name_map(json.dumps(NameMap({"x": "y"}).to_dict())).mapping) == {"x": "y"}
    model = onnx.ModelProto()
    write_name_map(model, nm)
    assert dict(read_name_map(model).mapping) == mapping


def test_graph_inputs_and_outputs_are_stored_implicitly() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph)
    write_name_map(model, NameMap({"x": "x", "y": "y", "h": "y"}))
    stored = next(p.value for p in model.metadata_props if p.key == "zhisuan.name_map")
    assert '"x"' not in stored  # inputs/outputs are implied by the graph
    assert dict(read_name_map(model).mapping) == {"x": "x", "y": "y", "h": "y"}
