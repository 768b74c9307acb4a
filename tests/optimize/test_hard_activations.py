"""fuse-hardswish and fuse-hardsigmoid on the forms exporters write: same numbers on ONNX Runtime
before and after, and the smaller graph. Tiny graphs built here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from optimize_helpers import const, f32, make_model

from zhisuan.optimize import optimize_model

SHAPE = [2, 3, 4, 4]
PASSES = ["fuse-hardswish", "fuse-hardsigmoid", "eliminate-dead"]


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def scalars(**values: float) -> list[onnx.TensorProto]:
    """Shape-[1] float initializers, as paddle2onnx writes them."""
    return [numpy_helper.from_array(np.array([v], np.float32), k) for k, v in values.items()]


def clip(x: str, lo: str, hi: str, out: str, opset: int, bounds: tuple[float, float]) -> onnx.NodeProto:
    if opset < 11:
        return helper.make_node("Clip", [x], [out], min=float(bounds[0]), max=float(bounds[1]))
    return helper.make_node("Clip", [x, lo, hi], [out])


def feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # both clip bounds are crossed: hard activations are linear only on [-3, 3]
    return {"x": rng.uniform(-6, 6, SHAPE).astype(np.float32)}


def check(model, passes, expect, rng, same_outputs):
    result = optimize_model(model, passes, feeds=[feeds(rng)])
    assert ops(result.model) == expect
    assert len(result.model.graph.node) < len(model.graph.node)
    assert result.verification.passed
    same_outputs(model, result.model, feeds(rng))
    assert result.name_map.get("y") == "y"
    return result


def paddle_hardswish(opset: int, *, reciprocal: bool = False) -> onnx.ModelProto:
    """paddle2onnx below opset 14: ``x * clip(x + 3, 0, 6) / 6`` (or ``* (1/6)``)."""
    last = (helper.make_node("Mul", ["prod", "sixth"], ["y"]) if reciprocal
            else helper.make_node("Div", ["prod", "six"], ["y"]))
    nodes = [
        helper.make_node("Add", ["x", "three"], ["shifted"]),
        clip("shifted", "zero", "six", "clipped", opset, (0.0, 6.0)),
        helper.make_node("Mul", ["x", "clipped"], ["prod"]),
        last,
    ]
    inits = scalars(three=3.0, zero=0.0, six=6.0, sixth=1.0 / 6.0)
    return make_model(nodes, [f32("x", SHAPE)], [f32("y", SHAPE)], inits, opset=opset)


@pytest.mark.parametrize("reciprocal", [False, True])
def test_paddle_hardswish_becomes_one_hardswish_on_opset_14(rng, same_outputs, reciprocal):
    result = check(paddle_hardswish(14, reciprocal=reciprocal), PASSES, ["HardSwish"], rng, same_outputs)
    assert result.passes[0].counts == {"hardswishes_fused": 1}


@pytest.mark.parametrize("opset", [10, 13])
def test_paddle_hardswish_before_opset_14_becomes_x_times_hardsigmoid(rng, same_outputs, opset):
    result = check(paddle_hardswish(opset), PASSES, ["HardSigmoid", "Mul"], rng, same_outputs)
    gate = result.model.graph.node[0]
    assert result.name_map.get("clipped") is None and gate.output[0] not in {"clipped", "shifted", "prod"}
    alpha = next(a.f for a in gate.attribute if a.name == "alpha")
    assert alpha == pytest.approx(1 / 6)


def test_x_times_a_hardsigmoid_form_becomes_hardswish(rng, same_outputs):
    """``x * (relu6(x + 3) / 6)``, ``x * clip(x / 6 + 0.5, 0, 1)`` and ``x * HardSigmoid(x)``."""
    forms = {
        "relu6": ([helper.make_node("Add", ["x", "three"], ["s"]), clip("s", "zero", "six", "c", 14, (0, 6)),
                   helper.make_node("Div", ["c", "six"], ["gate"])]),
        "paddle": ([helper.make_node("Div", ["x", "six"], ["s"]), helper.make_node("Add", ["half", "s"], ["t"]),
                    clip("t", "zero", "one", "gate", 14, (0, 1))]),
        "node": ([helper.make_node("HardSigmoid", ["x"], ["gate"], alpha=1 / 6, beta=0.5)]),
    }
    for nodes in forms.values():
        model = make_model([*nodes, helper.make_node("Mul", ["gate", "x"], ["y"])], [f32("x", SHAPE)],
                           [f32("y", SHAPE)], scalars(three=3.0, zero=0.0, six=6.0, half=0.5, one=1.0), opset=14)
        check(model, PASSES, ["HardSwish"], rng, same_outputs)


@pytest.mark.parametrize("opset", [10, 13])
def test_hardsigmoid_forms_become_one_hardsigmoid(rng, same_outputs, opset):
    """Paddle's ``clip(x * 0.2 + 0.5, 0, 1)``, ``clip(x / 6 + 0.5, 0, 1)`` and ``relu6(x + 3) / 6``, with
    their constants as Constant nodes (scalars) the way some exporters write them."""
    forms = [
        (0.2, 0.5, [helper.make_node("Mul", ["x", "slope"], ["s"]), helper.make_node("Add", ["s", "half"], ["t"]),
                    clip("t", "zero", "one", "y", opset, (0, 1))]),
        (1 / 6, 0.5, [helper.make_node("Div", ["x", "six"], ["s"]), helper.make_node("Add", ["s", "half"], ["t"]),
                      clip("t", "zero", "one", "y", opset, (0, 1))]),
        (1 / 6, 0.5, [helper.make_node("Add", ["x", "three"], ["s"]), clip("s", "zero", "six", "t", opset, (0, 6)),
                      helper.make_node("Div", ["t", "six"], ["y"])]),
    ]
    values = {"slope": 0.2, "half": 0.5, "zero": 0.0, "one": 1.0, "six": 6.0, "three": 3.0}
    for alpha, beta, nodes in forms:
        consts = [const(k, np.array(v, np.float32)) for k, v in values.items()]
        model = make_model([*consts, *nodes], [f32("x", SHAPE)], [f32("y", SHAPE)], opset=opset)
        result = check(model, PASSES, ["HardSigmoid"], rng, same_outputs)
        attrs = {a.name: a.f for a in result.model.graph.node[0].attribute}
        assert attrs == pytest.approx({"alpha": alpha, "beta": beta})


def test_shared_or_mismatched_pieces_are_left_alone(rng, same_outputs):
    # the clipped value is also a graph output: it must survive, so nothing is fused
    model = paddle_hardswish(14)
    model.graph.output.append(f32("clipped", SHAPE))
    assert ops(optimize_model(model, PASSES).model) == ops(model)
    # divided by 5 after clipping at 6: not a hard sigmoid
    bad = paddle_hardswish(14)
    bad.graph.node[3].input[1] = "five"
    bad.graph.initializer.extend(scalars(five=5.0))
    assert ops(optimize_model(bad, PASSES).model) == ops(bad)
    # a per-channel offset is not a scalar: the pattern does not apply
    wide = paddle_hardswish(14)
    wide.graph.node[0].input[1] = "offsets"
    wide.graph.initializer.append(numpy_helper.from_array(np.full((1, 3, 1, 1), 3.0, np.float32), "offsets"))
    assert ops(optimize_model(wide, PASSES).model) == ops(wide)


def test_default_pipeline_fuses_paddle_style_conv_hardswish_and_linear_head(rng, same_outputs):
    """Conv -> hardswish -> pooled -> flatten -> MatMul + Add, every constant in a Constant node."""
    w = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((3, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    consts = [const("w", w), const("fc", fc), const("bias", bias)] + [
        const(k, np.array([v], np.float32)) for k, v in {"three": 3.0, "zero": 0.0, "six": 6.0}.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["conv", "three"], ["shifted"]),
        helper.make_node("Clip", ["shifted", "zero", "six"], ["clipped"]),
        helper.make_node("Mul", ["conv", "clipped"], ["prod"]),
        helper.make_node("Div", ["prod", "six"], ["act"]),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
        helper.make_node("Add", ["logits", "bias"], ["y"]),
    ]
    model = make_model(consts + nodes, [f32("x", SHAPE)], [f32("y", [2, 5])], opset=14)
    result = optimize_model(model, feeds=[feeds(rng)])
    assert ops(result.model) == ["Conv", "HardSwish", "GlobalAveragePool", "Flatten", "Gemm"]
    assert result.verification.passed
    same_outputs(model, result.model, feeds(rng))
