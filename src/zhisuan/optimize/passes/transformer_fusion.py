"""Fuse attention, LayerNorm, GELU, SkipLayerNorm, embeddings of transformer models with ONNX
Runtime's offline transformer optimizer (``onnxruntime.transformers.optimizer``).

The fused operators are ``com.microsoft`` contrib ops: the result runs on ONNX Runtime only.
The model type (bert, gpt2) is detected from the graph unless ``options["model_type"]`` names
it; models without attention-like structure are left alone. ``opt_level=0`` keeps ORT's own
session rewrites (which write runtime-internal ops) out of the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


def detect_model_type(model: Any) -> str | None:
    """"bert" or "gpt2" for transformer-like graphs, None otherwise."""
    ops = {n.op_type for n in model.graph.node}
    if "Softmax" not in ops or "MatMul" not in ops:
        return None
    if not ({"LayerNormalization", "ReduceMean"} & ops):
        return None
    inputs = {v.name.lower() for v in model.graph.input}
    if any("past" in n for n in inputs) or ("Trilu" in ops and "token_type_ids" not in inputs):
        return "gpt2"
    text = " ".join((model.producer_name, model.graph.name, model.doc_string)).lower()
    if "gpt" in text:
        return "gpt2"
    return "bert"


@register_pass(
    "transformer-fusion", summary="Attention/LayerNorm/GELU fusion via onnxruntime.transformers (ORT only).",
    once=True, targets=("onnxruntime",),
)
def run(model: Any, ctx: PassContext) -> PassOutcome:
    model_type = ctx.options.get("model_type") or detect_model_type(model)
    if model_type is None:
        return PassOutcome(model, notes=["no transformer structure found: skipped"])
    from onnxruntime.transformers import optimizer

    before = len(model.graph.node)
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            opt = optimizer.optimize_model(model, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0)
            stats = {k: int(v) for k, v in (opt.get_fused_operator_statistics() or {}).items() if v}
    finally:
        quiet.setLevel(level)
    result = opt.model
    outcome = PassOutcome(result)
    fused_ops = {n.op_type for n in result.graph.node if n.domain == "com.microsoft"}
    outcome.changed = len(result.graph.node) != before or bool(fused_ops)
    outcome.counts.update(stats)
    outcome.details.append(f"model type {model_type}: {before} -> {len(result.graph.node)} nodes")
    if fused_ops:
        index.ensure_domain(result, "com.microsoft", 1)
        outcome.notes.append(
            f"result needs ONNX Runtime contrib ops ({', '.join(sorted(fused_ops))} in com.microsoft)"
        )
    return outcome
