"""The fixpoint driver, verification, name map composition and the public API."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from optimize_helpers import f32, make_model

import zhisuan.optimize as opt
from zhisuan.errors import UserError
from zhisuan.graph import NameMap, read_name_map, write_name_map
from zhisuan.optimize import PassOutcome, optimize_model, register_pass, unregister_pass


def chain_model():
    """x -> Identity -> Relu -> Identity -> Relu -> y; plus a Neg nobody reads."""
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Identity", ["b"], ["c"]),
        helper.make_node("Neg", ["c"], ["dead"]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    return make_model(nodes, [f32("x", [4])], [f32("y", [4])])


def test_public_api_shape():
    assert set(opt.__all__) >= {"optimize_model", "OptimizeResult", "PassReport", "available_passes"}
    names = {p.name for p in opt.available_passes()}
    assert names >= {
        "constants-to-initializers", "fold-constants", "eliminate-identity", "eliminate-dead", "fold-conv-bn",
        "matmul-add-to-gemm", "fuse-activation", "upgrade-opset", "transformer-fusion",
    }


def test_fixpoint_runs_until_nothing_changes():
    calls = []

    @register_pass("test-remove-one-neg", summary="removes one Neg per call")
    def remove_one(model, ctx):
        calls.append(1)
        out = PassOutcome(model)
        for node in model.graph.node:
            if node.op_type == "Neg":
                src, dst = node.input[0], node.output[0]
                model.graph.node.remove(node)
                for n in model.graph.node:
                    for i, name in enumerate(n.input):
                        if name == dst:
                            n.input[i] = src
                out.renamed[dst] = src
                out.count("removed")
                break
        return out

    try:
        negs = [helper.make_node("Neg", ["x"], ["n1"]), helper.make_node("Neg", ["n1"], ["n2"]),
                helper.make_node("Neg", ["n2"], ["n3"]), helper.make_node("Neg", ["n3"], ["n4"]),
                helper.make_node("Relu", ["n4"], ["y"])]
        model = make_model(negs, [f32("x", [4])], [f32("y", [4])])
        result = optimize_model(model, ["test-remove-one-neg"])  # 4 Negs cancel: same numbers
        assert [n.op_type for n in result.model.graph.node] == ["Relu"]
        assert result.rounds == 5 and len(calls) == 5  # 4 changing rounds + 1 that confirms the fixpoint
        assert result.passes[0].iterations == 5 and result.passes[0].counts["removed"] == 4
        assert result.name_map.get("n4") == "x"
    finally:
        unregister_pass("test-remove-one-neg")


def test_default_pipeline_report_and_name_map_in_metadata():
    model = chain_model()
    result = optimize_model(model)
    assert [n.op_type for n in result.model.graph.node] == ["Relu", "Relu"]
    assert result.nodes_before == 5 and result.nodes_after == 2
    assert [v.name for v in result.model.graph.output] == ["y"]
    stored = read_name_map(result.model)
    assert stored == result.name_map
    assert stored.get("a") == "x" and stored.get("c") == "b" and stored.get("dead") is None
    d = result.to_dict()
    assert d["verification"]["passed"] and d["nodes_after"] == 2
    assert any(p["name"] == "eliminate-identity" and p["changed"] for p in d["passes"])
    assert len(model.graph.node) == 5  # the input model is left unchanged


def test_name_map_composes_with_an_earlier_one():
    model = chain_model()
    write_name_map(model, NameMap({"orig_in": "x", "orig_hidden": "a", "orig_mid": "c", "orig_out": "y"}, "abc"))
    result = optimize_model(model)
    m = read_name_map(result.model)
    assert m.source_sha256 == "abc"
    assert m.mapping == {"orig_in": "x", "orig_hidden": "x", "orig_mid": "b", "orig_out": "y"}


def test_broken_pass_is_caught_and_named_and_nothing_is_returned():
    @register_pass("test-broken", summary="turns Relu into Neg")
    def broken(model, ctx):
        out = PassOutcome(model)
        for node in model.graph.node:
            if node.op_type == "Relu":
                node.op_type = "Neg"
                out.count("broken")
        return out

    try:
        with pytest.raises(UserError, match=r"differs from the original.*'y'.*first bad pass: test-broken"):
            optimize_model(chain_model(), ["eliminate-identity", "test-broken"])
        # without verification the broken result comes back (the caller asked for that)
        result = optimize_model(chain_model(), ["test-broken"], verify=False)
        assert result.verification is None
    finally:
        unregister_pass("test-broken")


def test_verification_uses_given_feeds_and_tolerance():
    w = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w")
    model = make_model([helper.make_node("Mul", ["x", "w"], ["y"])], [f32("x", [2])], [f32("y", [2])], [w])
    feeds = [{"x": np.array([1.0, -3.0], np.float32)}, {"x": np.array([0.5, 7.0], np.float32)}]
    result = optimize_model(model, ["eliminate-dead"], feeds=feeds)
    assert result.verification.batches == 2 and result.verification.worst.max_abs_error == 0.0


def test_user_errors():
    with pytest.raises(UserError, match="unknown pass 'nope'"):
        optimize_model(chain_model(), ["nope"])
    with pytest.raises(UserError, match="unknown target"):
        optimize_model(chain_model(), target="fpga")
    with pytest.raises(UserError, match="cannot downgrade"):
        optimize_model(chain_model(), opset=9)
