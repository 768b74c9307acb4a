"""Convert the model to a newer default-domain opset with ``onnx.version_converter``.

Needed e.g. before per-channel QDQ quantization of opset-11 models (DequantizeLinear ``axis``
needs opset 13). Without ``opset`` the pass does nothing; it never downgrades.
"""

from __future__ import annotations

from typing import Any

from zhisuan.errors import UserError
from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


@register_pass("upgrade-opset", summary="Upgrade the default-domain opset to --opset (onnx.version_converter).", once=True)
def run(model: Any, ctx: PassContext) -> PassOutcome:
    import onnx
    from onnx import version_converter

    target = ctx.opset
    current = index.default_opset(model)
    if target is None:
        return PassOutcome(model, notes=["no opset given: nothing to do"])
    if target < current:
        raise UserError(f"cannot downgrade opset {current} to {target}")
    latest = onnx.defs.onnx_opset_version()
    if target > latest:
        raise UserError(f"opset {target} is newer than this onnx package supports ({latest})")
    if target == current:
        return PassOutcome(model, notes=[f"already at opset {current}"])
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot convert opset {current} -> {target}: {first}") from None
    outcome = PassOutcome(converted, details=[f"opset {current} -> {target}"])
    outcome.count("opset_from", current)
    outcome.counts["opset_to"] = target
    return outcome
