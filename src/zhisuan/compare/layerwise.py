"""Layerwise comparison: expose paired tensors, run both models once per input, run CAND's
teacher-forced copy once per input, and attribute each layer's error to itself or to its inputs.

Five sessions in all, whatever the number of layers: REF and CAND unmodified (the per-output
figures and the verdict, exactly as a plain comparison computes them), REF and CAND with extra
outputs, and CAND teacher-forced (every layer's own error comes from one teacher-forced run). The
layer table is diagnosis: exposing tensors changes what a runtime fuses (see :data:`LAYERS_NOTE`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.compare.graphs import REF_SUFFIX, teacher_forced, with_outputs
from zhisuan.compare.metrics import AgreementAccumulator, TensorAgreement
from zhisuan.compare.pairing import Pairing, pair_tensors
from zhisuan.compare.results import (
    CompareConfig,
    CompareResult,
    Divergence,
    LayerResult,
    Measurement,
    ModelSide,
    OutputResult,
)
from zhisuan.compare.sides import (
    add_checked,
    cast_feeds,
    finish_timings,
    load_side,
    pair_outputs,
    run_outputs,
)
from zhisuan.graph.index import GraphIndex

_LAYERWISE_RUNTIMES = ("onnxruntime", "openvino")


#: How the layer table's figures are obtained (CompareResult.layers_note).
LAYERS_NOTE = (
    "Layer figures are diagnosis: they come from copies of the models that expose every paired "
    "tensor as a graph output, and from a teacher-forced copy of CAND. A runtime cannot fuse across "
    "an exposed tensor (ONNX Runtime then runs QuantizeLinear/DequantizeLinear in float instead of "
    "its integer kernels), so these figures can differ from the real run. A graph output's row "
    "measures the real graph output (the unmodified run, after its last QuantizeLinear/"
    "DequantizeLinear). The verdict, exit status and per-output figures come from the unmodified models."
)


def run_layerwise(
    ref_path: Path,
    cand_path: Path,
    ref_model: Any,
    cand_model: Any,
    feeds: Sequence[Mapping[str, np.ndarray]],
    config: CompareConfig,
    started: float,
    timings: dict[str, float],
) -> CompareResult:
    from zhisuan._io import sha256_file
    from zhisuan.errors import UserError

    for side in ("ref", "cand"):
        runtime = getattr(config, f"{side}_runtime")
        if runtime not in _LAYERWISE_RUNTIMES:
            raise UserError(
                f"--layerwise runs ONNX graphs on {' or '.join(_LAYERWISE_RUNTIMES)}; "
                f"{side.upper()} runtime {runtime!r} cannot expose intermediate tensors"
            )
    t0 = time.perf_counter()
    pairing = pair_tensors(
        ref_model, cand_model, ref_sha256=sha256_file(ref_path), cand_sha256=sha256_file(cand_path)
    )
    output_pairs = pair_outputs(ref_model, cand_model)
    cand_index = GraphIndex.build(cand_model)
    # Paired tensors that a node produces (graph inputs are identical on both sides by construction).
    probes = {c: r for c, r in pairing.pairs.items() if c in cand_index.producer}
    # Every graph output is a layer of its own, paired with REF's output of that name: the tensor
    # after CAND's last QuantizeLinear/DequantizeLinear, so the output's own quantization shows.
    probes.update({c: r for c, r in output_pairs.items() if c in cand_index.producer})
    timings["pairing"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref_rt = load_side(ref_path, config, "ref")
    cand_rt = load_side(cand_path, config, "cand")
    ref_ext = with_outputs(ref_model, [*probes.values(), *output_pairs.values()])
    cand_ext = with_outputs(cand_model, [*probes, *output_pairs])
    ref_ext_rt = load_side(ref_ext.SerializeToString(), config, "ref")
    cand_ext_rt = load_side(cand_ext.SerializeToString(), config, "cand")
    timings["load"] = time.perf_counter() - t0

    run_t = metrics_t = 0.0
    t0 = time.perf_counter()
    first_ref = ref_ext_rt.run(feeds[0])
    first_cand = cand_ext_rt.run(cast_feeds(feeds[0], cand_ext_rt.inputs()))
    run_t += time.perf_counter() - t0
    # Teacher-force only float tensors whose shapes agree: integer tensors (shapes, indices) are
    # exact on both sides, and a tensor whose layout differs cannot stand in for the other.
    forced = {
        c: first_cand[c]
        for c, r in probes.items()
        if c in first_cand and r in first_ref
        and np.issubdtype(first_cand[c].dtype, np.floating)
        and first_cand[c].shape == first_ref[r].shape
    }
    t0 = time.perf_counter()
    tf_model = teacher_forced(cand_model, cand_index, forced, forced)
    tf_rt = load_side(tf_model.SerializeToString(), config, "cand")
    timings["load"] += time.perf_counter() - t0

    layers_order = sorted(forced, key=lambda t: cand_index.producer[t])
    # Layers: no top-1 (an argmax over a feature map's last axis means nothing); carried: no verdict.
    own = {c: AgreementAccumulator(config.tolerance, top1=False) for c in layers_order}
    total = {c: AgreementAccumulator(config.tolerance, top1=False) for c in layers_order}
    carried = {c: AgreementAccumulator(config.tolerance, top1=False, check=False) for c in layers_order}
    outs = {c: AgreementAccumulator(config.tolerance) for c in output_pairs}
    exposed = {c: AgreementAccumulator(config.tolerance) for c in output_pairs}  # outputs as the copies compute them
    tf_inputs = {spec.name for spec in tf_rt.inputs()}
    with ref_rt, cand_rt, ref_ext_rt, cand_ext_rt, tf_rt:
        for i, feed in enumerate(feeds):
            t0 = time.perf_counter()
            real_want, real_got = run_outputs(ref_rt, cand_rt, feed, output_pairs)
            if i == 0:
                want, got = first_ref, first_cand
            else:
                want = ref_ext_rt.run(feed)
                got = cand_ext_rt.run(cast_feeds(feed, cand_ext_rt.inputs()))
            tf_feed = cast_feeds(feed, tf_rt.inputs())
            tf_feed = {k: v for k, v in tf_feed.items() if k in tf_inputs}
            for c in forced:
                name = c + REF_SUFFIX
                if name in tf_inputs:
                    ref_value = want[probes[c]]
                    # A later input whose shapes disagree here: feed CAND's own value (not forced).
                    value = ref_value if ref_value.shape == got[c].shape else got[c]
                    tf_feed[name] = np.asarray(value).astype(got[c].dtype, copy=False)
            own_values = tf_rt.run(tf_feed, layers_order) if layers_order else {}
            t1 = time.perf_counter()
            run_t += t1 - t0
            for c, r in output_pairs.items():
                add_checked(outs[c], real_want[r], real_got[c], c)
                add_checked(exposed[c], want[r], got[c], c)
            for c in layers_order:
                r = probes[c]
                # A graph output's row: the real output (unmodified run), against REF's real output.
                ref_value, cand_value = (real_want[r], real_got[c]) if c in output_pairs else (want[r], got[c])
                if ref_value.shape != cand_value.shape or want[r].shape != own_values[c].shape:
                    continue
                own[c].add(want[r], own_values[c])
                total[c].add(ref_value, cand_value)
                carried[c].add(own_values[c], cand_value)
            metrics_t += time.perf_counter() - t1
        sides = (ModelSide(str(ref_path), ref_rt.info.to_dict()), ModelSide(str(cand_path), cand_rt.info.to_dict()))
        closing = time.perf_counter()
    timings["close"] = time.perf_counter() - closing
    t0 = time.perf_counter()
    stops = set(pairing.pairs) | set(probes)
    layers = tuple(
        _layer(cand_index, pairing, c, probes[c], stops, own[c], total[c], carried[c]) for c in layers_order
    )
    first = next((i for i, layer in enumerate(layers) if layer.diverges), None)
    divergence = None
    if first is not None:
        layer = layers[first]
        divergence = Divergence(
            layer.node, layer.op_type, layer.output, layer.ref_tensor, first, layer.own, layer.total
        )
    outputs = tuple(OutputResult(c, r, Measurement.of(outs[c])) for c, r in output_pairs.items())
    note = LAYERS_NOTE + "".join(_exposed_difference(o, exposed[o.name].result()) for o in outputs)
    metrics_t += time.perf_counter() - t0
    return CompareResult(
        ref=sides[0],
        cand=sides[1],
        config=config,
        samples=len(feeds),
        outputs=outputs,
        within_tolerance=all(o.measurement.within_tolerance for o in outputs),
        layers=layers,
        first_divergence=divergence,
        pairing={**pairing.to_dict(), "layers": len(layers), "forced": len(forced)},
        layers_note=note,
        timings_s=finish_timings({**timings, "run": run_t, "metrics": metrics_t}, started),
    )


def _exposed_difference(output: OutputResult, exposed: TensorAgreement) -> str:
    """A sentence when the exposed copies compute an output's error differently from the real run."""
    real = output.measurement.metrics
    if math.isclose(real.max_abs_error, exposed.max_abs_error, rel_tol=0.01, abs_tol=1e-12):
        return ""
    return (
        f" Here output {output.name!r} has max abs error {exposed.max_abs_error:.4g} in the exposed "
        f"copies and {real.max_abs_error:.4g} in the real run."
    )


def _layer(
    index: GraphIndex,
    pairing: Pairing,
    output: str,
    ref_tensor: str,
    boundaries: set[str],
    own: AgreementAccumulator,
    total: AgreementAccumulator,
    carried: AgreementAccumulator,
) -> LayerResult:
    segment = _segment(index, output, boundaries)
    helpers = pairing.roles.helper_nodes
    main = max((i for i in segment if i not in helpers), default=index.producer[output])
    node = index.nodes[main]
    return LayerResult(
        node=node.name or f"#{main}",
        op_type=node.op_type,
        output=output,
        ref_tensor=ref_tensor,
        segment=tuple(index.nodes[i].name or f"#{i}" for i in sorted(segment)),
        own=Measurement.of(own),
        total=Measurement.of(total),
        carried=carried.result(),
    )


def _segment(index: GraphIndex, output: str, boundaries: set[str]) -> set[int]:
    """Nodes computing ``output`` from the nearest boundary tensors, graph inputs and constants."""
    found: set[int] = set()
    stack = [index.producer[output]]
    while stack:
        i = stack.pop()
        if i in found:
            continue
        found.add(i)
        for name in index.nodes[i].input:
            if not name or name in boundaries or name in index.constants:
                continue
            producer = index.producer.get(name)
            if producer is not None and index.nodes[producer].op_type != "Constant":
                stack.append(producer)
    return found
