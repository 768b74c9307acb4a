"""Pair the tensors of a candidate graph with the reference tensors that hold the same value.

Three ways, tried in order (never by position, and never by name alone):

1. **Name maps** written by zhisuan's own passes and quantizer (:mod:`zhisuan.graph.namemap`):
   CAND's map when its source is REF; both maps composed when REF and CAND come from one source;
   REF's map inverted when REF was derived from CAND.
2. **Identity** when both graphs are the same graph (same file on two runtimes or precisions).
3. **Topology**: every tensor gets a structural signature — its op type, attributes and the
   signatures of its inputs; graph inputs by name, constants by value — computed on a
   *normalised* view of each graph in which Identity, Cast, Dropout and quantize/dequantize
   chains are transparent, quantized operators (QLinearConv, MatMulInteger, ...) read as their
   float operators with dequantized weights (matched to the reference's weights by cosine), and a
   quantization whose zero point sits at the bottom of its range may stand for an absorbed Relu.
   Two tensors pair when their signatures agree; names only break ties between tensors that
   already hold the same value. This is what keeps a Conv output that a quantizer named
   ``relu_out`` paired with the reference's Conv output, not its Relu output.

Tensors inside a quantization chain (the outputs of QuantizeLinear, of DequantizeLinear fed by a
QuantizeLinear, of DynamicQuantizeLinear, and un-rescaled integer accumulators) are never paired:
they belong to the layer that consumes or produces them, so its quantization error is its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zhisuan.graph.index import GraphIndex, to_array

#: Ops whose first output holds the same value as their first input (for pairing purposes).
_ALIAS_OPS = {"Identity", "Cast", "Dropout", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_COMMUTATIVE = {"Add", "Mul", "Sum", "Max", "Min", "Mean", "And", "Or", "Xor", "Equal", "BitwiseAnd", "BitwiseOr"}

#: Quantized op -> (float op, input positions of its float inputs, output zero-point position or None)
_QUANTIZED_OPS: dict[str, tuple[str, tuple[int, ...], int | None]] = {
    "QLinearConv": ("Conv", (0, 3, 8), 7),
    "QLinearMatMul": ("MatMul", (0, 3), 7),
    "MatMulInteger": ("MatMul", (0, 1), None),
    "ConvInteger": ("Conv", (0, 1), None),
    "QGemm": ("Gemm", (0, 3, 6), 8),
    "QLinearAdd": ("Add", (0, 3), 7),
    "QLinearMul": ("Mul", (0, 3), 7),
    "QLinearSigmoid": ("Sigmoid", (0,), 4),
    "QLinearLeakyRelu": ("LeakyRelu", (0,), 4),
    "QLinearAveragePool": ("AveragePool", (0,), 4),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), 4),
}
# Attributes that quantized ops carry and their float ops do not.
_QUANT_ONLY_ATTRS = {"channels_last", "transA", "transB", "alpha", "beta"}
_MIN_WEIGHT_COSINE = 0.995


@dataclass(frozen=True)
class QuantRoles:
    """What each tensor and node of a graph is for, as far as quantization goes."""

    in_layer: frozenset[str]  # tensors inside a quantization chain: never paired
    helper_nodes: frozenset[int]  # quantize/dequantize/rescale plumbing (not a layer's main op)
    qparams: frozenset[str]  # scales and zero points computed at run time


@dataclass(frozen=True)
class Pairing:
    """CAND tensor -> REF tensor, how it was found, and what stayed unpaired."""

    pairs: Mapping[str, str]
    method: str  # "name_map", "name_map_common_source", "name_map_inverted", "identity", "topology"
    unpaired_cand: tuple[str, ...] = ()
    unpaired_ref: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    roles: QuantRoles = field(default_factory=lambda: QuantRoles(frozenset(), frozenset(), frozenset()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "paired": len(self.pairs),
            "unpaired_cand": list(self.unpaired_cand),
            "unpaired_ref": list(self.unpaired_ref),
            "notes": list(self.notes),
        }


def quant_roles(index: GraphIndex) -> QuantRoles:
    """Find the quantization plumbing of a graph (see the module docstring)."""
    in_layer: set[str] = set()
    helpers: set[int] = set()
    qparams: set[str] = set()
    unscaled: set[str] = set()
    for i, node in enumerate(index.nodes):
        op = node.op_type
        ins = [n for n in node.input]
        if op == "QuantizeLinear":
            helpers.add(i)
            in_layer.update(node.output)
        elif op == "DequantizeLinear":
            helpers.add(i)
            src = index.producer.get(ins[0])
            if src is not None and index.nodes[src].op_type == "QuantizeLinear":
                in_layer.update(node.output)  # a fake-quant chain belongs to its consumer
        elif op == "DynamicQuantizeLinear":
            helpers.add(i)
            in_layer.update(node.output)
            qparams.update(node.output[1:])
        elif op in ("MatMulInteger", "ConvInteger"):
            in_layer.update(node.output)
            unscaled.update(node.output)
        elif op == "Cast" and ins and ins[0] in unscaled:
            helpers.add(i)
            in_layer.update(node.output)
            unscaled.update(node.output)
        elif op in ("Mul", "Div") and len(ins) == 2:
            kinds = ["q" if n in qparams else "c" if n in index.constants else "u" if n in unscaled else "" for n in ins]
            if "q" in kinds and all(k in ("q", "c") for k in kinds):
                helpers.add(i)
                in_layer.update(node.output)
                qparams.update(node.output)
            elif "q" in kinds and "u" in kinds:
                helpers.add(i)  # rescales an integer accumulator: its output is the layer's output
        elif op in _QUANTIZED_OPS:
            in_layer.update(node.output)
    return QuantRoles(frozenset(in_layer), frozenset(helpers), frozenset(qparams))


def pair_tensors(
    ref: Any,
    cand: Any,
    *,
    ref_sha256: str | None = None,
    cand_sha256: str | None = None,
) -> Pairing:
    """Pair CAND's tensors with REF's (both ``onnx.ModelProto``). See the module docstring.

    ``ref_sha256`` / ``cand_sha256`` are the files' hashes, checked against the ``source_sha256``
    a name map records; without them a map is trusted when its names fit the graphs.
    """
    from zhisuan.graph import read_name_map

    ref_index, cand_index = GraphIndex.build(ref), GraphIndex.build(cand)
    roles = quant_roles(cand_index)
    ref_names, cand_names = ref_index.tensor_names(), cand_index.tensor_names()
    cand_map, ref_map = read_name_map(cand), read_name_map(ref)
    notes: list[str] = []

    raw: dict[str, list[str]] | None = None
    method = ""
    if cand_map is not None and _describes(cand_map, ref_sha256, ref_names, cand_names):
        raw, method = _invert(cand_map.mapping), "name_map"
    elif cand_map is not None and ref_map is not None and cand_map.source_sha256 and (
        cand_map.source_sha256 == ref_map.source_sha256
    ):
        raw, method = {}, "name_map_common_source"
        for src, dst in cand_map.mapping.items():
            if src in ref_map.mapping:
                raw.setdefault(dst, []).append(ref_map.mapping[src])
    elif ref_map is not None and _describes(ref_map, cand_sha256, cand_names, ref_names):
        raw, method = {src: [dst] for src, dst in ref_map.mapping.items()}, "name_map_inverted"
    elif cand_map is not None or ref_map is not None:
        notes.append("a name map is present but relates neither model to the other; paired by topology")

    ref_kinds, cand_kinds = _elem_kinds(ref), _elem_kinds(cand)
    if raw is not None:
        pairs = _from_name_map(raw, ref_index, cand_index, roles)
    elif _same_graph(ref, cand):
        method = "identity"
        pairs = {t: t for t in cand_names if t not in cand_index.constants}
    else:
        method = "topology"
        pairs = _pair_by_topology(ref_index, cand_index, roles, (ref_kinds, cand_kinds))

    paired_ref = set(pairs.values())
    unpaired_cand = tuple(
        t for t in _activations(cand_index)
        if t not in pairs and t not in roles.in_layer and cand_kinds.get(t, "float") == "float"
    )
    unpaired_ref = tuple(
        t for t in _activations(ref_index) if t not in paired_ref and ref_kinds.get(t, "float") == "float"
    )
    return Pairing(pairs, method, unpaired_cand, unpaired_ref, tuple(notes), roles)


def _activations(index: GraphIndex) -> list[str]:
    """Non-constant tensors in node order (graph inputs first)."""
    found = list(index.inputs)
    for node in index.nodes:
        if node.op_type == "DequantizeLinear" and node.input[0] in index.constants:
            continue  # a dequantized weight is a constant, not an activation
        found += [t for t in node.output if t and t not in index.constants]
    return found


def _describes(name_map: Any, source_sha: str | None, source_names: set[str], result_names: set[str]) -> bool:
    """Does ``name_map`` map ``source`` tensors to ``result`` tensors?"""
    if name_map.source_sha256 and source_sha:
        return bool(name_map.source_sha256 == source_sha)
    keys, values = set(name_map.mapping), set(name_map.mapping.values())
    if not keys:
        return False
    return len(keys & source_names) >= 0.5 * len(keys) and len(values & result_names) >= 0.5 * len(values)


def _invert(mapping: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for src, dst in mapping.items():
        out.setdefault(dst, []).append(src)
    return out


def _from_name_map(
    raw: Mapping[str, list[str]], ref_index: GraphIndex, cand_index: GraphIndex, roles: QuantRoles
) -> dict[str, str]:
    pairs: dict[str, str] = {}
    ref_names = ref_index.tensor_names()
    for dst, sources in raw.items():
        sources = [s for s in sources if s in ref_names and s not in ref_index.constants]
        if not sources or dst in cand_index.constants:
            continue
        # Several source tensors folded into one: the fused result holds the value of the last.
        src = dst if dst in sources else max(sources, key=ref_index.topo_position)
        target = _before_fake_quant(dst, cand_index)
        if target not in cand_index.tensor_names() or target in roles.in_layer:
            continue
        pairs.setdefault(target, src)
    return pairs


def _before_fake_quant(tensor: str, index: GraphIndex) -> str:
    """For the output of DequantizeLinear(QuantizeLinear(x)), the tensor x; else ``tensor``."""
    dq = index.producer.get(tensor)
    if dq is None or index.nodes[dq].op_type != "DequantizeLinear":
        return tensor
    q = index.producer.get(index.nodes[dq].input[0])
    if q is None or index.nodes[q].op_type != "QuantizeLinear":
        return tensor
    return str(index.nodes[q].input[0])


def _same_graph(ref: Any, cand: Any) -> bool:
    def key(model: Any) -> tuple[Any, ...]:
        g = model.graph
        return (
            tuple((n.op_type, n.domain, tuple(n.input), tuple(n.output)) for n in g.node),
            tuple(sorted(i.name for i in g.initializer)),
            tuple(v.name for v in g.input),
        )

    return key(ref) == key(cand)


# --- topology -------------------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def _const_sig(proto: Any) -> str:
    array = to_array(proto)
    return "c" + hashlib.blake2b(
        f"{array.dtype.str}{array.shape}".encode() + np.ascontiguousarray(array).tobytes(), digest_size=12
    ).hexdigest()


def _attrs(node: Any, *, drop: set[str] | frozenset[str] = frozenset()) -> tuple[Any, ...]:
    from onnx import AttributeProto, helper

    items = []
    for attr in sorted(node.attribute, key=lambda a: a.name):
        if attr.name in drop:
            continue
        if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            value: Any = "graph:" + _digest(attr.SerializeToString())
        elif attr.type == AttributeProto.TENSOR:
            value = _const_sig(attr.t)
        else:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            elif isinstance(value, list):
                value = tuple(value)
        items.append((attr.name, value))
    return tuple(items)


def _kind(dtype: Any) -> str:
    return "float" if np.issubdtype(dtype, np.floating) else "bool" if dtype == np.bool_ else "int"


class _RefConstants:
    """REF's constants by signature, and its float weights by shape for approximate matching."""

    def __init__(self, index: GraphIndex) -> None:
        self.sig: dict[str, str] = {}
        self.by_shape: dict[tuple[int, ...], list[tuple[str, Any]]] = {}
        for name, proto in index.constants.items():
            sig = _const_sig(proto)
            self.sig[name] = sig
            if _is_float_proto(proto):
                self.by_shape.setdefault(tuple(int(d) for d in proto.dims), []).append((sig, proto))
        self.signatures = set(self.sig.values())
        self._unit: dict[str, np.ndarray] = {}

    def same_shape(self, shape: tuple[int, ...]) -> list[str]:
        """Signatures of REF's float constants of this shape (at most 64: beyond that, no guessing)."""
        found = list(dict.fromkeys(sig for sig, _ in self.by_shape.get(tuple(shape), [])))
        return found if len(found) <= 64 else []

    def closest(self, values: np.ndarray) -> str | None:
        """The signature of REF's float constant of the same shape most aligned with ``values``."""
        candidates = self.by_shape.get(tuple(values.shape), [])
        if not candidates:
            return None
        v = values.astype(np.float64).ravel()
        norm = np.linalg.norm(v)
        if norm == 0.0:
            return None
        v = v / norm
        best, best_cos = None, _MIN_WEIGHT_COSINE
        for sig, proto in candidates:
            unit = self._unit.get(sig)
            if unit is None:
                array = to_array(proto)
                flat = array.astype(np.float64).ravel()
                n = np.linalg.norm(flat)
                unit = flat / n if n else flat
                self._unit[sig] = unit
            cos = float(np.dot(v, unit))
            if cos > best_cos:
                best, best_cos = sig, cos
        return best


def _is_float_proto(proto: Any) -> bool:
    from onnx import TensorProto

    return proto.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


def _dequantized(index: GraphIndex, node: Any, pos: int) -> np.ndarray | None:
    """Float values of a quantized constant input of ``node`` (scale-free if the scale is unknown)."""
    name = node.input[pos] if pos < len(node.input) else ""
    if name not in index.constants:
        return None
    q = to_array(index.constants[name]).astype(np.float64)
    op = node.op_type
    scale_name = zp_name = ""
    axis = 0
    if op == "DequantizeLinear":
        scale_name = node.input[1]
        zp_name = node.input[2] if len(node.input) > 2 else ""
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    elif op in ("MatMulInteger", "ConvInteger"):
        zp_name = node.input[pos + 2] if len(node.input) > pos + 2 else ""
        axis = q.ndim - 1 if op == "MatMulInteger" else 0
    elif (op, pos) not in _BIAS_INPUTS:  # QLinear ops: weight, scale, zero point in a row
        scale_name, zp_name = node.input[pos + 1], node.input[pos + 2]
        axis = q.ndim - 1 if op == "QLinearMatMul" else 0
    zp = _array(index, zp_name)
    scale = _array(index, scale_name)
    if zp is not None:
        q = q - _along(zp, q, axis)
    return q * _along(scale, q, axis) if scale is not None else q


_MOVEMENT = {"Gather", "Reshape", "Transpose", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Expand"}


def _dequantized_by_consumer(index: GraphIndex, table: str, moved: str) -> np.ndarray | None:
    """An integer table moved by one op and then dequantized by its only consumer, dequantized."""
    users = index.consumers.get(moved, [])
    if len(users) != 1 or index.nodes[users[0]].op_type != "DequantizeLinear":
        return None
    dq = index.nodes[users[0]]
    q = to_array(index.constants[table])
    scale = _array(index, dq.input[1])
    zp = _array(index, dq.input[2]) if len(dq.input) > 2 else None
    if np.issubdtype(q.dtype, np.floating) or scale is None or scale.size != 1 or (zp is not None and zp.size != 1):
        return None
    values = q.astype(np.float64)
    return (values - zp.reshape(())) * scale.reshape(()) if zp is not None else values * scale.reshape(())


_BIAS_INPUTS = {("QLinearConv", 8), ("QGemm", 6)}


def _array(index: GraphIndex, name: str) -> np.ndarray | None:
    return to_array(index.constants[name]).astype(np.float64) if name in index.constants else None


def _along(values: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    """``values`` (a scalar or one per channel of ``axis``) shaped to broadcast against ``like``."""
    if values.size == 1 or like.ndim == 0:
        return values.reshape(())
    axis = axis % like.ndim
    if values.size != like.shape[axis]:
        return values.reshape(-1)[:1].reshape(())  # blocked quantization: the first block's value
    shape = [1] * like.ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _zero_point_at_bottom(index: GraphIndex, name: str) -> bool:
    """A uint8 zero point of 0 or an int8 one of -128: the quantized range starts at 0 (an absorbed Relu)."""
    if name not in index.constants:
        return False
    zp = to_array(index.constants[name])
    if zp.size != 1:
        return False
    return (zp.dtype == np.uint8 and int(zp.ravel()[0]) == 0) or (zp.dtype == np.int8 and int(zp.ravel()[0]) == -128)


def _signatures(index: GraphIndex, ref_consts: _RefConstants | None, ref_sigs: set[str] | None) -> dict[str, str]:
    """Structural signature of every tensor of the graph (see the module docstring).

    For CAND, ``ref_consts``/``ref_sigs`` come from REF: quantized or changed weights are matched
    to REF's float weights (by cosine, else as the one same-shape weight that makes the consuming
    node match REF's), and an absorbed Relu is assumed only where REF has that Relu.
    """
    sig: dict[str, str] = {}
    unmatched: dict[str, tuple[int, ...]] = {}  # CAND constants with no twin in REF, by shape
    for name in index.inputs:
        sig[name] = _digest("input", name)
    for name, proto in index.constants.items():
        sig[name] = _const_sig(proto)
        if ref_consts is not None and sig[name] not in ref_consts.signatures and _is_float_proto(proto):
            array = to_array(proto)
            if array.size > 1:  # e.g. fp16 weights
                sig[name] = ref_consts.closest(array) or sig[name]
            if sig[name] not in ref_consts.signatures:
                unmatched[name] = tuple(array.shape)

    def input_sig(node: Any, pos: int) -> str:
        name = node.input[pos] if pos < len(node.input) else ""
        if not name:
            return "none"
        return sig.get(name) or _digest("unknown", name)

    def weight_sig(node: Any, pos: int) -> str:
        name = node.input[pos] if pos < len(node.input) else ""
        if ref_consts is not None and name in index.constants:
            values = _dequantized(index, node, pos)
            if values is not None:
                match = ref_consts.closest(values)
                if match is None:
                    unmatched[name] = tuple(values.shape)
                return match or input_sig(node, pos)
        return input_sig(node, pos)

    def relu_or(primary: str, zp_name: str) -> str:
        if ref_sigs is not None and _zero_point_at_bottom(index, zp_name):
            relu = _digest("Relu", "", (), (primary,), 0)
            if relu in ref_sigs:
                return relu
        return primary

    def node_sigs(op: str, domain: str, attrs: Any, names: list[str], ins: list[str], count: int) -> list[str]:
        def make(values: list[str]) -> list[str]:
            while values and values[-1] == "none":  # an omitted optional input is no input
                values = values[:-1]
            key = tuple(sorted(values)) if op in _COMMUTATIVE else tuple(values)
            return [_digest(op, domain, attrs, key, k) for k in range(count)]

        first = make(ins)
        if ref_sigs is None or ref_consts is None or first[0] in ref_sigs:
            return first
        # A weight REF does not have (perturbed, re-quantized): try REF's weights of its shape.
        open_positions = [i for i, n in enumerate(names) if n in unmatched][:2]
        choices = [ref_consts.same_shape(unmatched[names[i]]) for i in open_positions]
        if not open_positions or any(not c for c in choices):
            return first
        import itertools

        for combo in itertools.islice(itertools.product(*choices), 256):
            trial = list(ins)
            for i, value in zip(open_positions, combo, strict=True):
                trial[i] = value
            result = make(trial)
            if result[0] in ref_sigs:
                return result
        return first

    qparams: set[str] = set()
    for node in index.nodes:
        op = node.op_type
        outs = [o for o in node.output]
        if node.op_type == "Constant" and outs and outs[0] in index.constants:
            continue
        if op == "DequantizeLinear" and node.input[0] in index.constants:
            values = _dequantized(index, node, 0)
            match = ref_consts.closest(values) if ref_consts is not None and values is not None else None
            sig[outs[0]] = match or _digest("dq-const", input_sig(node, 0))
            if ref_consts is not None and match is None and values is not None:
                unmatched[outs[0]] = tuple(values.shape)
            continue
        if op == "QuantizeLinear":
            zp = node.input[2] if len(node.input) > 2 else ""
            sig[outs[0]] = relu_or(input_sig(node, 0), zp)
            continue
        if op == "DynamicQuantizeLinear":
            sig[outs[0]] = input_sig(node, 0)
            for k, o in enumerate(outs[1:], start=1):
                sig[o] = _digest("qparam", input_sig(node, 0), k)
                qparams.add(o)
            continue
        if op in _ALIAS_OPS:
            sig[outs[0]] = input_sig(node, 0)
            for k, o in enumerate(outs[1:], start=1):
                sig[o] = _digest(op, "extra", input_sig(node, 0), k)
            continue
        if op in ("Mul", "Div") and len(node.input) == 2 and any(n in qparams for n in node.input):
            others = [n for n in node.input if n not in qparams and n not in index.constants]
            if not others:
                qparams.add(outs[0])
                sig[outs[0]] = _digest("qparam", op, tuple(input_sig(node, i) for i in range(2)))
            else:  # rescaling an integer accumulator: the value of the float op it stands for
                sig[outs[0]] = sig.get(others[0]) or _digest("unknown", others[0])
            continue
        if op in _QUANTIZED_OPS:
            float_op, positions, zp_pos = _QUANTIZED_OPS[op]
            names = [node.input[p] if p < len(node.input) else "" for p in positions]
            ins = [weight_sig(node, p) if p else input_sig(node, p) for p in positions]
            primary = node_sigs(float_op, "", _attrs(node, drop=_QUANT_ONLY_ATTRS), names, ins, 1)[0]
            zp = node.input[zp_pos] if zp_pos is not None and zp_pos < len(node.input) else ""
            sig[outs[0]] = relu_or(primary, zp)
            continue
        names = list(node.input)
        ins = [input_sig(node, i) for i in range(len(names))]
        if op in _MOVEMENT and ref_consts is not None and names and names[0] in index.constants:
            # Gather/Reshape/... of a quantized table, dequantized afterwards (dynamic quantization
            # of embeddings): read the table as its dequantized float values.
            values = _dequantized_by_consumer(index, names[0], outs[0])
            match = ref_consts.closest(values) if values is not None else None
            if match is not None:
                ins[0] = match
        domain = "" if node.domain == "ai.onnx" else node.domain
        for o, value in zip(outs, node_sigs(op, domain, _attrs(node), names, ins, len(outs)), strict=True):
            if o:
                sig[o] = value
    return sig


def _pair_by_topology(
    ref_index: GraphIndex, cand_index: GraphIndex, roles: QuantRoles, kinds: tuple[dict[str, str], dict[str, str]]
) -> dict[str, str]:
    ref_consts = _RefConstants(ref_index)
    ref_sig = _signatures(ref_index, None, None)
    ref_by_sig: dict[str, list[str]] = {}
    for name in _activations(ref_index):
        ref_by_sig.setdefault(ref_sig[name], []).append(name)
    cand_sig = _signatures(cand_index, ref_consts, set(ref_sig.values()))
    ref_types, cand_types = kinds
    pairs: dict[str, str] = {}
    for name in _activations(cand_index):
        if name in roles.in_layer:
            continue
        options = ref_by_sig.get(cand_sig.get(name, ""), [])
        kind = cand_types.get(name)
        options = [r for r in options if kind is None or ref_types.get(r) in (None, kind)]
        if not options:
            continue
        if name in options:
            pairs[name] = name
            continue
        producer_op = _producer_op(cand_index, name)
        same_op = [r for r in options if _producer_op(ref_index, r) == producer_op]
        pairs[name] = (same_op or options)[0]
    return pairs


def _producer_op(index: GraphIndex, name: str) -> str | None:
    i = index.producer.get(name)
    return None if i is None else index.nodes[i].op_type


def _elem_kinds(model: Any) -> dict[str, str]:
    """float / int / bool of every tensor whose type shape inference can tell."""
    from onnx import helper, shape_inference

    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:
        inferred = model
    kinds = {}
    g = inferred.graph
    for value in (*g.input, *g.value_info, *g.output):
        elem = value.type.tensor_type.elem_type
        if elem:
            try:
                kinds[value.name] = _kind(helper.tensor_dtype_to_np_dtype(elem))
            except (KeyError, TypeError):
                continue
    return kinds
