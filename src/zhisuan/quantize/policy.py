"""Which nodes to quantize, decided from the graph's content (never from a model's name).

**Integer islands.** ONNX Runtime's x86 CPU kernels are fast only when a run of operators stays in
int8 from one ``QLinearConv``/``QLinearMatMul`` to the next; every float operator in between costs
a ``DequantizeLinear`` -> op -> ``QuantizeLinear`` round trip over the whole activation. So besides
the compute operators (Conv, ConvTranspose, Gemm, MatMul), static INT8 quantizes a *chain* operator
(Relu/Clip, Add, Mul, pooling, Pad, Concat, Resize, Sigmoid, shape-only ops) exactly when it sits
inside such a run: every data input comes from a quantized node (or a graph input or a constant),
and its output leads, through quantized chain operators, to a quantized compute node. Those inputs
and that output are quantized anyway (the neighbours' Q/DQ pairs), so this adds no quantization
point; it only removes round trips. Clip/Relu then vanish into the producer's output range (a
ReLU6 becomes a [0, 6] range), Add becomes ``QLinearAdd``, pooling ``QLinearGlobalAveragePool``.
A chain whose output only reaches float-only operators — a residual stream feeding a LayerNorm
written as ReduceMean/Sub/Pow, a HardSwish's Div, a Softmax — stays float, so the transformer
parts of a model keep their precision.

Measured on efficientnet-lite0 (docs/quantize.md): quantizing only Conv/MatMul/Gemm left each
ReLU6 as float Clip between DQ/Q pairs and quantized the *unclipped* Conv outputs, whose range is
far wider than [0, 6] (output cosine vs FP32 0.77, x0.76 the FP32 speed); the integer island gives
cosine 0.98 and x2 on ONNX Runtime.

**Pad folding.** TensorFlow-style "same" padding is exported as an explicit ``Pad`` before each
strided Conv. ORT's quantizer quantizes the Pad's constant-value input and leaves the Pad in float
between DQ and Q, which breaks every integer run at that point; a zero-constant spatial Pad whose
only consumers are Convs is exactly the Conv's own ``pads`` attribute, so it is folded there.

>>> from zhisuan.quantize.policy import COMPUTE_OPS
>>> sorted(COMPUTE_OPS)
['Conv', 'ConvTranspose', 'Gemm', 'MatMul']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zhisuan.graph import index
from zhisuan.results import Record

#: Operators with weights (or activation x activation products) that INT8 is for.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

#: Operators that ORT runs on int8 tensors (QLinear* kernels or plain data movement) and that are
#: quantized only inside an integer island.
CHAIN_OPS = frozenset({
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Pad", "Concat", "Resize", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split",
})

#: Chain operators whose every input is data; the others read data from input 0 only (the rest are
#: shapes, pads, scales, clip bounds).
_ALL_INPUTS_DATA = frozenset({"Add", "Mul", "Concat"})


@dataclass(frozen=True)
class Selection:
    """The nodes static INT8 quantizes: compute nodes and the chain nodes of integer islands."""

    nodes: tuple[str, ...]
    compute: tuple[str, ...]
    chain: tuple[str, ...]
    op_counts: dict[str, int]

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(sorted(self.op_counts))

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": len(self.nodes), "compute_nodes": len(self.compute), "chain_nodes": len(self.chain),
                "op_counts": dict(self.op_counts)}


def _data_inputs(node: Any) -> list[str]:
    if node.op_type in _ALL_INPUTS_DATA:
        return [name for name in node.input if name]
    return [node.input[0]] if node.input and node.input[0] else []


def select_static_nodes(model: Any, *, exclude: Iterable[str] = ()) -> Selection:
    """Compute nodes plus the chain nodes of integer islands (see the module docstring).

    ``exclude``: nodes kept in float (the user's ``--exclude``, the search's float layers); an
    excluded compute node no longer anchors an island, so the chain around it stays float too.
    """
    graph = model.graph
    excluded = set(exclude)
    constants = set(index.initializers(graph))
    graph_inputs = {v.name for v in graph.input}
    outputs = index.output_names(graph)
    producers = index.producers(graph)
    users = index.consumers(graph)
    compute = {n.name for n in graph.node if n.op_type in COMPUTE_OPS and n.name not in excluded}
    chain = {n.name for n in graph.node if n.op_type in CHAIN_OPS and n.name not in excluded}
    nodes = [n for n in graph.node if n.name in chain]

    def quantized(name: str) -> bool:
        return name in compute or name in chain

    changed = True
    while changed:  # greatest fixpoint: drop chain nodes until every survivor is surrounded
        changed = False
        for node in nodes:
            if node.name not in chain:
                continue
            inside = all(
                name in constants or name in graph_inputs
                or (name in producers and quantized(producers[name].name))
                for name in _data_inputs(node)
            )
            for out in node.output:
                readers = users.get(out, [])
                if out in outputs or not any(quantized(r.name) for r in readers):
                    inside = False
            if not inside:
                chain.discard(node.name)
                changed = True
    order = [n for n in graph.node if n.name in compute or n.name in chain]
    counts: dict[str, int] = {}
    for node in order:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return Selection(
        nodes=tuple(n.name for n in order),
        compute=tuple(n.name for n in order if n.name in compute),
        chain=tuple(n.name for n in order if n.name in chain),
        op_counts=dict(sorted(counts.items())),
    )


def fold_pad_into_conv(model: Any) -> int:
    """Fold zero-constant, spatial-only ``Pad`` nodes into the ``pads`` of the Convs they feed.

    Exact (the Conv pads with zeros itself). In place; returns the number of Pads folded. The Pad's
    output tensor disappears; its constant inputs are dropped when nothing else reads them.
    """
    graph = model.graph
    inits = index.initializers(graph)
    users = index.consumers(graph)
    outputs = index.output_names(graph)
    opset = index.default_opset(model)
    doomed = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
            continue
        spatial = _zero_spatial_pads(pad, inits, opset)
        readers = users.get(pad.output[0], [])
        if spatial is None or pad.output[0] in outputs or not readers:
            continue
        if not all(_foldable_conv(r, pad.output[0], len(spatial) // 2) for r in readers):
            continue
        for conv in readers:
            current = index.attr(conv, "pads", None) or [0] * len(spatial)
            _set_ints(conv, "pads", [int(a) + int(b) for a, b in zip(current, spatial, strict=True)])
            conv.input[0] = pad.input[0]
        doomed.append(pad)
    if doomed:
        index.remove_nodes(graph, doomed)
        drop_unused_initializers(graph)
    return len(doomed)


def _zero_spatial_pads(pad: Any, inits: dict[str, Any], opset: int) -> list[int] | None:
    """The Conv-style pads [x1_begin, ..., x1_end, ...] of a zero, constant-mode Pad that pads only
    spatial axes (not batch or channels), else None."""
    mode = index.attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else str(mode)) != "constant":
        return None
    if opset < 11:
        pads = index.attr(pad, "pads", None)
        value = float(index.attr(pad, "value", 0.0))
    else:
        if len(pad.input) < 2 or pad.input[1] not in inits:
            return None
        if len(pad.input) > 3 and pad.input[3]:  # explicit axes: rare, not worth the bookkeeping
            return None
        pads = index.to_array(inits[pad.input[1]]).astype(np.int64).tolist()
        value = 0.0
        if len(pad.input) > 2 and pad.input[2]:
            if pad.input[2] not in inits:
                return None
            const = index.to_array(inits[pad.input[2]])
            if const.size != 1:
                return None
            value = float(const.reshape(-1)[0])
    if pads is None or value != 0.0 or len(pads) % 2 or len(pads) < 6:
        return None
    rank = len(pads) // 2
    begins, ends = list(pads[:rank]), list(pads[rank:])
    if begins[0] or begins[1] or ends[0] or ends[1] or any(p < 0 for p in pads):
        return None
    return [int(p) for p in begins[2:] + ends[2:]]


def _foldable_conv(node: Any, tensor: str, spatial_rank: int) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[0] != tensor:
        return False
    if tensor in node.input[1:]:
        return False
    auto_pad = index.attr(node, "auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)) not in ("NOTSET", ""):
        return False
    current = index.attr(node, "pads", None)
    return current is None or len(current) == 2 * spatial_rank


def _set_ints(node: Any, name: str, values: list[int]) -> None:
    from onnx import helper

    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, values))


@dataclass(frozen=True)
class Contender(Record):
    """One candidate of ``--mode auto``: its metric, its drop against the float model, its latency."""

    name: str  # "int8" (static), "int8-dynamic" or "fp32" (the float model, unchanged)
    value: float
    drop_pct: float
    meets_budget: bool
    median_ms: float
    p10_ms: float
    p90_ms: float
    float_layers: int = 0


#: A quantized model must be at least this much faster than the float one to be chosen over it:
#: below that, interleaved medians on a shared machine do not tell the two apart reliably.
MIN_SPEEDUP = 1.05


def choose(contenders: list[Contender], *, budget_pct: float, float_name: str = "fp32",
           min_speedup: float = MIN_SPEEDUP) -> tuple[Contender, str]:
    """The fastest contender that meets the budget and beats the float model by ``min_speedup``;
    else the float model. Returns it and the reason, naming what was rejected and why.

    >>> f = Contender("fp32", 1.0, 0.0, True, 10.0, 9.0, 11.0)
    >>> q = Contender("int8", 0.9, 10.0, False, 4.0, 3.5, 4.5)
    >>> d = Contender("int8-dynamic", 1.0, 0.0, True, 8.0, 7.5, 8.5)
    >>> choose([f, q, d], budget_pct=1.0)[0].name
    'int8-dynamic'
    """
    base = next((c for c in contenders if c.name == float_name), None)
    if base is None:
        raise ValueError(f"no {float_name!r} contender to compare with")
    rejected = []
    eligible = []
    for c in contenders:
        if c.name == float_name:
            continue
        speedup = base.median_ms / c.median_ms if c.median_ms > 0 else 0.0
        if not c.meets_budget:
            rejected.append(f"{c.name}: drop {c.drop_pct:.2f} % > budget {budget_pct:g} %")
        elif speedup < min_speedup:
            rejected.append(f"{c.name}: x{speedup:.2f} the float speed (needs >= x{min_speedup:g})")
        else:
            eligible.append((c.median_ms, c, speedup))
    if eligible:
        _, best, speedup = min(eligible, key=lambda t: t[0])
        others = "; ".join(rejected)
        reason = (f"fastest contender within the {budget_pct:g} % budget: x{speedup:.2f} the float speed, "
                  f"drop {best.drop_pct:.2f} %" + (f" (rejected: {others})" if others else ""))
        return best, reason
    if not rejected:
        return base, "no INT8 variant could be built, so the float model was kept"
    return base, ("no INT8 variant is both within the budget and faster than float here, so the float model "
                  "was kept: " + "; ".join(rejected))


@dataclass(frozen=True)
class PolicyDecision(Record):
    """What ``--mode auto`` wrote (``chosen``: a contender's name) and why, with every contender."""

    budget_pct: float
    min_speedup: float
    chosen: str
    reason: str
    contenders: tuple[Contender, ...]

    def contender(self, name: str) -> Contender | None:
        return next((c for c in self.contenders if c.name == name), None)


def decide(contenders: Sequence[Contender], *, budget_pct: float, notes: Sequence[str] = (),
           min_speedup: float = MIN_SPEEDUP) -> PolicyDecision:
    """:func:`choose` as a decision record; ``notes`` (e.g. why no search ran) are added to the reason."""
    winner, reason = choose(list(contenders), budget_pct=budget_pct, min_speedup=min_speedup)
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return PolicyDecision(budget_pct, min_speedup, winner.name, reason, tuple(contenders))


#: Activations ORT's QDQ quantizer can absorb into the quantization range of their input.
_ABSORBABLE = frozenset({"Relu", "Clip"})


def settle_activations(model: Any) -> tuple[int, int]:
    """Decide, per Relu/Clip of a QDQ model quantized with ``QDQKeepRemovableActivations``, whether
    it stays a node. In place; returns (kept, folded).

    Pattern: ``producer -> Q_in -> DQ_in -> act -> Q_out -> DQ_out``. The input pair is given the
    output pair's scale and zero point, so the numbers are those of an absorbed activation (the
    producer's output is rounded straight onto the activation's range) whatever the runtime does:
    ORT's default removal would give the same, and OpenVINO would otherwise requantize twice.

    * After Conv/ConvTranspose/Gemm/MatMul the activation **stays in the file**: ORT fuses it
      away when it loads the model (same kernels, same speed), and the tensor named like the
      activation's output really holds the activated value. Absorbed, the Conv would write that
      name with the unclipped value and layerwise tools would compare the wrong numbers
      (efficientnet-lite0: own cosine 0.52 for the first Conv instead of 0.9999).
    * After any other producer (e.g. a residual ``Add``) it is **folded** as ORT's quantizer folds
      it (``Q_out`` reads the producer's output directly): there ORT does not fuse the explicit
      form, and the extra requantization cost 28 % of ResNet-50's INT8 speed.
    """
    graph = model.graph
    producers = index.producers(graph)
    users = index.consumers(graph)
    outputs = index.output_names(graph)
    kept = folded = 0
    doomed = []
    for act in graph.node:
        if act.op_type not in _ABSORBABLE or not act.input:
            continue
        dq_in = producers.get(act.input[0])
        q_in = producers.get(dq_in.input[0]) if dq_in is not None and dq_in.op_type == "DequantizeLinear" else None
        if q_in is None or q_in.op_type != "QuantizeLinear":
            continue
        readers = users.get(act.output[0], [])
        if (len(users.get(q_in.output[0], [])) != 1 or len(users.get(dq_in.output[0], [])) != 1
                or len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or act.output[0] in outputs):
            continue
        q_out = readers[0]
        if len(q_out.input) < 3 or len(q_in.input) < 3:
            continue
        source = producers.get(q_in.input[0])
        if source is not None and source.op_type in COMPUTE_OPS:
            for node in (q_in, dq_in):
                node.input[1], node.input[2] = q_out.input[1], q_out.input[2]
            kept += 1
        else:
            q_out.input[0] = q_in.input[0]
            doomed.extend([q_in, dq_in, act])
            folded += 1
    index.remove_nodes(graph, doomed)
    drop_unused_initializers(graph)  # also the input pairs' own scales, replaced by the output pair's
    return kept, folded


def float_outputs(model: Any) -> int:
    """Take the ``QuantizeLinear -> DequantizeLinear`` pair off every graph output of a QDQ model.

    In place; returns the number of outputs freed. ORT's quantizer rounds a quantized node's output
    onto its calibration range even when it is a graph output, so any value beyond what calibration
    saw is clipped, and the output is float anyway. The producer writes the output's name again; a
    node inside the graph that reads the output (and so may be quantized) keeps reading the
    dequantized copy under a new name, so no integer run is broken.
    """
    graph = model.graph
    producers = index.producers(graph)
    users = index.consumers(graph)
    outputs = index.output_names(graph)
    graph_inputs = {v.name for v in graph.input}
    taken = index.tensor_names(graph)
    freed = 0
    doomed = []
    for value in graph.output:
        name = value.name
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.output) != 1:
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(users.get(q.output[0], [])) != 1:
            continue
        source = q.input[0]
        writer = producers.get(source)
        if (writer is None or source in outputs or source in graph_inputs
                or len(users.get(source, [])) != 1):
            continue
        readers = users.get(name, [])
        writer.output[list(writer.output).index(source)] = name
        q.input[0] = name
        if readers:
            copy = index.unique_name(taken, f"{name}_DequantizeLinear_Output")
            dq.output[0] = copy
            for reader in readers:
                for i, used in enumerate(reader.input):
                    if used == name:
                        reader.input[i] = copy
                for sub in index.subgraphs(reader):
                    index.rename_in_subgraph(sub, name, copy)
        else:
            doomed.extend([q, dq])
        freed += 1
    index.remove_nodes(graph, doomed)
    drop_unused_initializers(graph)
    return freed


def drop_unused_initializers(graph: Any) -> int:
    """Remove initializers no node reads (ONNX Runtime warns about each one on every session)."""
    read = {name for node in graph.node for name in index.node_reads(node)}
    keep = read | index.output_names(graph) | {v.name for v in graph.input}
    unused = [i for i in graph.initializer if i.name not in keep]
    for init in unused:
        graph.initializer.remove(init)
    return len(unused)
