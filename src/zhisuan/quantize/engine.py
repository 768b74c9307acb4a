"""Build quantized models: preprocessing (through :mod:`zhisuan.optimize`), INT8 static (QDQ) and
dynamic with ONNX Runtime's quantizer, FP16/BF16 conversion; and the quantized graph's name map.

Name map convention (read by the layerwise compare tool): a float-graph tensor ``X`` maps to the
quantized-graph tensor that carries **the value its consumers see**. In QDQ graphs that is the
output of ``X``'s ``DequantizeLinear`` (``X`` after int8 rounding), not ``X`` itself, because
after ONNX Runtime fuses QDQ into ``QLinearConv``/``QLinearMatMul`` only the rounded value exists.
A quantized weight ``W`` maps to its ``DequantizeLinear`` output. A tensor that is not quantized
maps to itself; one that no longer exists (e.g. a float MatMul output replaced by the dynamic
``MatMulInteger`` chain under another name) is absent.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.graph import index
from zhisuan.graph.namemap import NameMap
from zhisuan.quantize.calibration import Feeds
from zhisuan.quantize.config import Method, Mode, QuantizeConfig
from zhisuan.quantize.policy import (
    COMPUTE_OPS,
    Selection,
    drop_unused_initializers,
    float_outputs,
    fold_pad_into_conv,
    select_static_nodes,
    settle_activations,
)
from zhisuan.results import Record

#: Opset needed for QDQ with per-channel axes (DequantizeLinear ``axis``), and what ORT's QDQ
#: quantizer emits for int8 QDQ.
QDQ_MIN_OPSET = 13

#: Passes of :mod:`zhisuan.optimize` run before quantization, when registered: weights stored in
#: Constant nodes must become initializers to be quantized at all, folded shape arithmetic and
#: Conv+BN folding give the quantizer fewer, larger ops.
PREPARE_PASSES = (
    "constants-to-initializers",
    "fold-constants",
    "eliminate-identity",
    "eliminate-dead",
    "fold-conv-bn",
)


@dataclass(frozen=True)
class Preprocessing(Record):
    """How the float model quantization starts from was derived from the input: the passes applied,
    what each changed (pass -> counts), the opset before and after, and why the opset changed."""

    passes: tuple[str, ...]
    changes: dict[str, dict[str, int]]
    opset_before: int
    opset_after: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prepared:
    """The float model quantization starts from, its name map and how it was derived."""

    model: Any
    name_map: NameMap  # input model (or its own source, if it carried a map) -> prepared model
    report: Preprocessing


def default_opset(model: Any) -> int:
    return next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 1)


def prepare(model: Any, config: QuantizeConfig, feeds: Feeds | None = None) -> Prepared:
    """Run the preprocessing passes (and an opset upgrade where QDQ needs it), then name every node."""
    from zhisuan.optimize import optimize_model
    from zhisuan.optimize.registry import registry

    known = registry()
    passes = [p for p in PREPARE_PASSES if p in known]
    before = default_opset(model)
    opset = QDQ_MIN_OPSET if config.static and before < QDQ_MIN_OPSET else None
    notes = []
    if opset is not None:
        notes.append(f"opset {before} -> {opset}: QDQ (per-channel DequantizeLinear axis) needs opset >= {QDQ_MIN_OPSET}")
    verify_feeds = feeds[:1] if feeds else None
    result = optimize_model(model, passes=passes, opset=opset, verify=True, feeds=verify_feeds)
    prepared = result.model
    changes = {p.name: dict(p.counts) for p in result.passes if p.changed}
    applied = [p.name for p in result.passes if p.skipped is None]
    name_map = result.name_map
    folded = fold_pad_into_conv(prepared)  # exact; see zhisuan.quantize.policy
    applied.append("fold-pad-into-conv")
    if folded:
        changes["fold-pad-into-conv"] = {"pads_folded": folded}
        name_map = name_map.then(NameMap.identity(index.tensor_names(prepared.graph)))
    _name_nodes(prepared)
    return Prepared(prepared, name_map,
                    Preprocessing(tuple(applied), changes, before, default_opset(prepared), tuple(notes)))


def _name_nodes(model: Any) -> None:
    """Give every node a unique name: nodes_to_exclude and the reports refer to nodes by name."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = f"{node.op_type}_{i}"
            name, k = base, 1
            while name in taken or name in seen:
                name, k = f"{base}_{k}", k + 1
            node.name = name
        seen.add(node.name)


def check_exclusions(source: Any, prepared: Any, config: QuantizeConfig) -> None:
    """Every ``nodes_to_exclude`` name must be a node of the prepared model, else a UserError naming
    the unknown ones: the quantizer ignores a name it does not find, so a typo would pass silently."""
    present = {n.name for n in prepared.graph.node}
    unknown = [name for name in dict.fromkeys(config.nodes_to_exclude) if name not in present]
    if not unknown:
        return
    original = {n.name for n in source.graph.node if n.name}
    missing = [name for name in unknown if name not in original]
    folded = [name for name in unknown if name in original]
    reasons = []
    if missing:
        reasons.append(f"no node named {', '.join(map(repr, missing))} in the graph")
    if folded:
        reasons.append(f"{', '.join(map(repr, folded))} no longer exist after preprocessing "
                       "(folded into a neighbour, e.g. BatchNormalization into its Conv)")
    layers = [n.name for n in prepared.graph.node if n.op_type in COMPUTE_OPS][:5]
    hint = f" (quantizable layers include {', '.join(layers)})" if layers else ""
    raise UserError(f"--exclude: {'; '.join(reasons)}{hint}")


def quantizable_nodes(model: Any, config: QuantizeConfig) -> list[tuple[str, str]]:
    """(name, op_type) of the *layers* — the compute nodes the sensitivity analysis and the search
    may keep in float — minus the user's exclusions. Chain nodes of integer islands are not layers:
    they follow the compute nodes around them (:func:`zhisuan.quantize.policy.select_static_nodes`).

    A MatMul/Gemm needs a constant weight to be worth quantizing dynamically; activation x
    activation MatMuls (attention scores) are quantized only in static mode.
    """
    inits = {i.name for i in model.graph.initializer}
    ops = set(config.quantized_ops()) if config.op_types or not config.static else set(COMPUTE_OPS)
    out = []
    for node in model.graph.node:
        if node.op_type not in ops or node.name in config.nodes_to_exclude:
            continue
        if not config.static and not any(i in inits for i in node.input[:2]):
            continue
        out.append((node.name, node.op_type))
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizer logs advisory warnings on the root logger; they are not for our users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    def __init__(self, feeds: Feeds) -> None:
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._feeds[start_index:end_index])


class Int8Builder:
    """Builds INT8 models of one prepared float model with any set of nodes kept in float.

    Static mode calibrates once (the ranges are cached in the work directory), so every later
    candidate of the sensitivity analysis and the search costs only the quantizer's graph rewrite.
    """

    def __init__(self, prepared_path: Path, config: QuantizeConfig, calibration: Feeds, workdir: Path) -> None:
        self.path = prepared_path
        self.config = config
        self.calibration = calibration
        self.workdir = workdir
        self._cache = workdir / "calibration.json"
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from zhisuan.graph import load_model

            self._model = load_model(self.path)
        return self._model

    def selection(self, keep_float: Sequence[str] = ()) -> Selection:
        """The nodes static INT8 quantizes with ``keep_float`` (and the user's exclusions) in float."""
        exclude = {*self.config.nodes_to_exclude, *keep_float}
        if self.config.op_types:  # the user's explicit op types: exactly those nodes, no islands
            picked = [n for n in self.model.graph.node if n.op_type in self.config.op_types and n.name not in exclude]
            counts: dict[str, int] = {}
            for node in picked:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
            names = tuple(n.name for n in picked)
            return Selection(names, names, (), dict(sorted(counts.items())))
        return select_static_nodes(self.model, exclude=exclude)

    def build(self, out: Path, keep_float: Sequence[str] = ()) -> Path:
        exclude = sorted({*self.config.nodes_to_exclude, *keep_float})
        try:
            with _quiet():
                if self.config.static:
                    self._static(out, exclude)
                else:
                    self._dynamic(out, exclude)
        except UserError:
            raise
        except Exception as exc:  # the quantizer's ValueError/RuntimeError on a model it cannot handle
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ONNX Runtime's quantizer failed: {type(exc).__name__}: {first[:300]}") from None
        return out

    def calibrate(self) -> None:
        """Collect activation ranges once, with the calibrator options that ``quantize_static`` does
        not pass on: its Entropy calibrator keeps 128 histogram bins for 128 quantized bins, so its
        KL search has a single candidate and the result is exactly MinMax (identical scales, measured)."""
        if self._cache.is_file():
            return
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

        method = _ort_method(self.config.method)
        options: dict[str, Any] = {}
        if self.config.method is Method.PERCENTILE:
            options.update(num_bins=2048, percentile=self.config.percentile)
        else:  # TensorRT's entropy calibration: 2048 histogram bins searched for 128 quantized bins
            options.update(num_bins=2048, num_quantized_bins=128)
        op_types = list(self.selection().op_types)
        with _quiet(), contextlib.redirect_stdout(None), tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            calibrator = create_calibrator(
                self.path, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=method, extra_options=options,
            )
            # A few batches per call: each call reduces what it collected into the running ranges and
            # frees it, so memory stays bounded on large models. (ORT's own bound,
            # max_intermediate_outputs, discards the batches it collected before reducing them.)
            for start in range(0, len(self.calibration), _CALIBRATION_CHUNK):
                calibrator.collect_data(_Reader(self.calibration[start : start + _CALIBRATION_CHUNK]))
            ranges = calibrator.compute_data()
            del calibrator
        save_tensors_data(ranges, self._cache)

    def _static(self, out: Path, exclude: list[str]) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        selection = self.selection(exclude)
        if not selection.nodes:
            if not self.selection(self.config.nodes_to_exclude).nodes:
                raise UserError("every quantizable node is excluded; nothing is left to quantize")
            # the search may try every layer in float: that candidate is the float model itself
            shutil.copyfile(self.path, out)
            return
        self.calibrate()
        quantize_static(
            str(self.path), str(out), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(selection.op_types),
            nodes_to_quantize=list(selection.nodes),
            per_channel=self.per_channel,
            # U8 activations x S8 weights: the VNNI/AVX2 fast path of ORT's CPU kernels. ORT's own
            # default (S8 activations) runs far slower on x86.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=self.config.weights_7bit,
            nodes_to_exclude=exclude,
            calibrate_method=_ort_method(self.config.method),
            calibration_cache_path=str(self._cache),
            # Activations stay nodes; settle_activations then decides which remain (see there).
            extra_options={"QDQKeepRemovableActivations": True, **self.config.extra},
        )
        from zhisuan.graph import load_model, save_model

        model = load_model(out)
        if self.config.extra.get("QDQKeepRemovableActivations", True):
            settle_activations(model)
        if not self.config.quantize_outputs:
            float_outputs(model)
        drop_unused_initializers(model.graph)
        save_model(model, out)

    def _dynamic(self, out: Path, exclude: list[str]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(self.path), str(out),
            op_types_to_quantize=list(self.config.quantized_ops()),
            per_channel=self.per_channel,
            weight_type=QuantType.QInt8,
            reduce_range=self.config.weights_7bit,
            nodes_to_exclude=exclude,
            extra_options=dict(self.config.extra),
        )
        from zhisuan.graph import load_model, save_model

        model = load_model(out)
        if drop_unused_initializers(model.graph):
            save_model(model, out)

    @property
    def per_channel(self) -> bool:
        # Per-channel weights cost nothing measurable at run time and recover much accuracy: static
        # efficientnet-lite0 output cosine 0.98 vs 0.71 per tensor (depthwise convolutions); dynamic
        # MiniLM embeddings cosine 0.994 vs 0.964 per tensor at the same speed. Default for both modes.
        if self.config.per_channel is not None:
            return self.config.per_channel
        return True


#: Calibration batches collected per calibrator call (see Int8Builder.calibrate).
_CALIBRATION_CHUNK = 2


def _ort_method(method: Method) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        Method.MINMAX: CalibrationMethod.MinMax,
        Method.PERCENTILE: CalibrationMethod.Percentile,
        Method.ENTROPY: CalibrationMethod.Entropy,
    }[method]


def convert_float16(model: Any, mode: Mode) -> Any:
    """FP16 with ONNX Runtime's converter (inputs and outputs stay float32); BF16 is refused."""
    if mode is Mode.BF16:
        raise UserError(
            "bf16: ONNX Runtime's CPU execution provider has no bf16 kernels for Conv, MatMul or Gemm, so a "
            "bf16 graph cannot run there; use OpenVINO with INFERENCE_PRECISION_HINT=bf16 on CPUs with avx512_bf16/AMX"
        )
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - depends on the ORT build
        raise UserError(f"fp16 needs onnxruntime.transformers.float16, which this onnxruntime lacks ({exc})") from None
    with _quiet(), contextlib.redirect_stdout(None):
        # Resize/Range etc. have no fp16 CPU kernel in ORT; the converter's op block list keeps them in float.
        return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)


def quantized_name_map(source: Any, result: Any) -> NameMap:
    """Source (float) tensor -> the result tensor carrying its value, as the module docstring defines."""
    graph = result.graph
    names = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    names.update(o for n in graph.node for o in n.output if o)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def dequantized(name: str) -> str | None:
        for q in consumers.get(name, []):
            if q.op_type == "QuantizeLinear":
                for dq in consumers.get(q.output[0], []):
                    if dq.op_type == "DequantizeLinear":
                        return dq.output[0]
        return None

    producers = {o: n for n in graph.node for o in n.output}
    src_names = {v.name for v in source.graph.input} | {i.name for i in source.graph.initializer}
    src_names.update(o for n in source.graph.node for o in n.output if o)
    mapping: dict[str, str] = {}
    for name in sorted(src_names):
        if name in names:
            mapping[name] = dequantized(name) or name
            continue
        # a weight replaced by its int8 copy: the DequantizeLinear output of that copy
        for cand in (f"{name}_DequantizeLinear_Output", f"{name}_quantized_DequantizeLinear_Output"):
            if cand in producers and producers[cand].op_type == "DequantizeLinear":
                mapping[name] = cand
                break
    return NameMap(mapping)


def write_temp(model: Any, directory: Path, stem: str) -> Path:
    from zhisuan.graph import save_model

    path = Path(tempfile.mkstemp(prefix=f"{stem}.", suffix=".onnx", dir=directory)[1])
    save_model(model, path)
    return path
