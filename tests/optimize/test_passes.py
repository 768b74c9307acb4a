"""Each pass on a tiny graph: same numbers before and after, the expected smaller graph, the name map."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from optimize_helpers import const, f32, make_model

from zhisuan.optimize import optimize_model


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def conv_bn_relu_model(rng, *, constants: bool = False):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    scale, beta = rng.uniform(0.5, 2, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    arrays = {"w": w, "b": b, "scale": scale, "beta": beta, "mean": mean, "var": var}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv_out"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv_out", "scale", "beta", "mean", "var"], ["bn_out"], epsilon=1e-3),
        helper.make_node("Relu", ["bn_out"], ["y"]),
    ]
    if constants:
        return make_model([const(k, v) for k, v in arrays.items()] + nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 8, 8])])
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    return make_model(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 8, 8])], inits)


def test_constants_to_initializers_moves_weights_and_keeps_names(rng, same_outputs):
    model = conv_bn_relu_model(rng, constants=True)
    result = optimize_model(model, ["constants-to-initializers"])
    out = result.model
    assert "Constant" not in ops(out)
    assert {i.name for i in out.graph.initializer} == {"w", "b", "scale", "beta", "mean", "var"}
    assert result.passes[0].counts["constants_moved"] == 6
    assert result.name_map.get("w") == "w" and result.name_map.get("conv_out") == "conv_out"
    same_outputs(model, out, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})


def test_constant_weight_model_gets_conv_bn_folded(rng, same_outputs):
    """Weights in Constant nodes (as paddle2onnx writes them) must not stop folding."""
    model = conv_bn_relu_model(rng, constants=True)
    result = optimize_model(model)
    out = result.model
    assert ops(out) == ["Conv", "Relu"]
    assert result.verification.passed
    same_outputs(model, out, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})


def test_fold_conv_bn(rng, same_outputs):
    model = conv_bn_relu_model(rng)
    result = optimize_model(model, ["fold-conv-bn", "eliminate-dead"])
    out = result.model
    assert "BatchNormalization" not in ops(out) and len(out.graph.node) == 2
    assert result.name_map.get("bn_out") == "bn_out"
    assert result.name_map.get("conv_out") is None  # pre-BN value no longer exists
    assert "w" not in {i.name for i in out.graph.initializer}  # old weight removed as dead
    same_outputs(model, out, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})


def test_fuse_activation_uses_ort_fused_conv_and_is_skipped_elsewhere(rng, same_outputs):
    model = conv_bn_relu_model(rng)
    result = optimize_model(model, ["fold-conv-bn", "fuse-activation", "eliminate-dead"])
    out = result.model
    assert [(n.domain, n.op_type) for n in out.graph.node] == [("com.microsoft", "FusedConv")]
    assert result.requires == ["com.microsoft"]
    assert result.name_map.get("y") == "y" and result.name_map.get("bn_out") is None
    same_outputs(model, out, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})
    skipped = optimize_model(model, ["fuse-activation"], target="openvino")
    assert skipped.passes[0].skipped and ops(skipped.model) == ops(model)


def test_fold_constants_and_dead_nodes(rng, same_outputs):
    a = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["a"], ["at"], perm=[1, 0]),
        helper.make_node("Mul", ["at", "two"], ["a2"]),
        helper.make_node("MatMul", ["x", "a2"], ["y"]),
        helper.make_node("Neg", ["x"], ["unused"]),
    ]
    inits = [numpy_helper.from_array(a, "a"), numpy_helper.from_array(np.float32(2.0), "two")]
    model = make_model(nodes, [f32("x", [2, 4])], [f32("y", [2, 4])], inits)
    result = optimize_model(model, ["fold-constants", "eliminate-dead"])
    out = result.model
    assert ops(out) == ["MatMul"]
    assert {i.name for i in out.graph.initializer} == {"a2"}
    assert result.name_map.get("a2") == "a2" and result.name_map.get("unused") is None
    same_outputs(model, out, {"x": rng.standard_normal((2, 4)).astype(np.float32)})


def test_fold_constants_skips_growth():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])]
    inits = [numpy_helper.from_array(np.array([256, 256], np.int64), "shape")]
    model = make_model(nodes, [f32("x", [256, 256])], [f32("y", [256, 256])], inits)
    result = optimize_model(model, ["fold-constants"], verify=False)
    assert "ConstantOfShape" in ops(result.model)  # 256 KiB from 16 bytes: not folded


def test_eliminate_identity_maps_names_and_keeps_output_names(rng, same_outputs):
    nodes = [
        helper.make_node("Identity", ["x"], ["x_id"]),
        helper.make_node("Relu", ["x_id"], ["r"]),
        helper.make_node("Dropout", ["r"], ["r_drop"]),
        helper.make_node("Identity", ["r_drop"], ["y"]),
    ]
    model = make_model(nodes, [f32("x", [3])], [f32("y", [3])])
    result = optimize_model(model, ["eliminate-identity"])
    out = result.model
    assert ops(out) == ["Relu"]
    assert [v.name for v in out.graph.output] == ["y"] and out.graph.node[0].output[0] == "y"
    assert result.name_map.get("x_id") == "x"
    assert result.name_map.get("r") == "y" and result.name_map.get("r_drop") == "y"
    same_outputs(model, out, {"x": rng.standard_normal(3).astype(np.float32)})


def test_matmul_add_to_gemm(rng, same_outputs):
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    model = make_model(nodes, [f32("x", [2, 4])], [f32("y", [2, 5])], inits)
    result = optimize_model(model, ["matmul-add-to-gemm"])
    assert ops(result.model) == ["Gemm"]
    assert result.name_map.get("mm") is None and result.name_map.get("y") == "y"
    same_outputs(model, result.model, {"x": rng.standard_normal((2, 4)).astype(np.float32)})


def test_matmul_on_3d_input_is_not_turned_into_gemm(rng):
    w = rng.standard_normal((4, 5)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "w0"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(5, np.float32), "w0")]
    model = make_model(nodes, [f32("x", [2, 3, 4])], [f32("y", [2, 3, 5])], inits)
    assert ops(optimize_model(model, ["matmul-add-to-gemm"]).model) == ["MatMul", "Add"]


def test_dedup_initializers(rng, same_outputs):
    c = rng.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "c1"], ["s"]), helper.make_node("Mul", ["s", "c2"], ["y"])]
    inits = [numpy_helper.from_array(c, "c1"), numpy_helper.from_array(c.copy(), "c2")]
    model = make_model(nodes, [f32("x", [3])], [f32("y", [3])], inits)
    result = optimize_model(model, ["dedup-initializers"])
    assert [i.name for i in result.model.graph.initializer] == ["c1"]
    assert result.name_map.get("c2") == "c1"
    same_outputs(model, result.model, {"x": rng.standard_normal(3).astype(np.float32)})


def test_upgrade_opset(rng, same_outputs):
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]), helper.make_node("Relu", ["u"], ["y"])]
    model = make_model(nodes, [f32("x", [3])], [f32("y", [1, 3])], opset=11)
    result = optimize_model(model, ["constants-to-initializers"], opset=13)
    out = result.model
    assert next(i.version for i in out.opset_import if i.domain == "") == 13
    assert result.passes[0].name == "upgrade-opset" and result.passes[0].changed
    assert result.name_map.get("y") == "y"
    same_outputs(model, out, {"x": rng.standard_normal(3).astype(np.float32)})


def test_onnxslim_pass_keeps_outputs(rng, same_outputs):
    model = conv_bn_relu_model(rng)
    result = optimize_model(model, ["onnxslim"])
    assert len(result.model.graph.node) < len(model.graph.node)
    assert result.name_map.get("y") == "y" and result.name_map.get("x") == "x"
    same_outputs(model, result.model, {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})


def test_transformer_fusion_fuses_layernorm(rng, same_outputs):
    """A decomposed LayerNorm (ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add) becomes one node."""
    g = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "b"], ["ln"]),
        helper.make_node("MatMul", ["ln", "wq"], ["q"]),
        helper.make_node("Softmax", ["q"], ["y"], axis=-1),
    ]
    inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.float32(1e-5), "eps"),
             numpy_helper.from_array(g, "g"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "wq")]
    model = make_model(nodes, [f32("x", [1, 4, 8])], [f32("y", [1, 4, 8])], inits)
    result = optimize_model(model, ["transformer-fusion"])
    assert "LayerNormalization" in ops(result.model) and "ReduceMean" not in ops(result.model)
    assert result.name_map.get("y") == "y"
    same_outputs(model, result.model, {"x": rng.standard_normal((1, 4, 8)).astype(np.float32)})


def test_fold_constants_keeps_shared_weight_unduplicated(rng, same_outputs):
    """Tied embeddings: Transpose(wte) must not be folded into a second full-size copy."""
    wte = rng.standard_normal((300, 64)).astype(np.float32)  # 75 KiB > MAX_GROWTH_BYTES
    nodes = [helper.make_node("Gather", ["wte", "ids"], ["emb"]), helper.make_node("Transpose", ["wte"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["emb", "wt"], ["y"])]
    ids = helper.make_tensor_value_info("ids", 7, [2])
    model = make_model(nodes, [ids], [f32("y", [2, 300])], [numpy_helper.from_array(wte, "wte")])
    result = optimize_model(model, ["fold-constants", "eliminate-dead"])
    assert "Transpose" in ops(result.model) and len(result.model.graph.initializer) == 1
    same_outputs(model, result.model, {"ids": np.array([3, 7], np.int64)})


def test_strip_value_info_reaches_if_branches_and_keeps_their_signatures(rng, same_outputs):
    def branch(name: str, op: str) -> onnx.GraphProto:
        nodes = [helper.make_node(op, ["x", "x"], ["t"]), helper.make_node("Relu", ["t"], [f"{name}_out"])]
        return helper.make_graph(nodes, name, [], [f32(f"{name}_out", [3])], value_info=[f32("t", [3])])

    cond = helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)
    positive = helper.make_node("Greater", ["s", "zero"], ["c"])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "Add"), else_branch=branch("else", "Mul"))
    model = make_model([cond, positive, node], [f32("x", [3])], [f32("y", [3])],
                       [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model.graph.value_info.append(f32("s", []))
    result = optimize_model(model, ["strip-value-info"])
    report = next(p for p in result.passes if p.name == "strip-value-info")
    assert report.counts == {"value_info_removed": 1, "subgraph_value_info_removed": 2}
    stripped = result.model.graph.node[2]
    for attr in stripped.attribute:
        assert len(attr.g.value_info) == 0 and [o.name for o in attr.g.output] == [f"{attr.g.name}_out"]
    for x in (np.array([1, 2, 3], np.float32), np.array([-1, -2, 0.5], np.float32)):
        same_outputs(model, result.model, {"x": x})
