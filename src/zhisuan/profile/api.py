"""``profile_model``: per-operator time, analytic FLOPs and bytes, and the model on the device roofline.

ONNX Runtime: the session is created with profiling on; after warm-up runs (not counted: the
trace is started fresh by a second session whose warm-up is dropped by run index) the JSON trace
is parsed — node events (``cat == "Node"``, name ``<node>_kernel_time``, ``args.op_name``,
``dur`` in µs) — into per-node and per-op-type mean time per run. OpenVINO: the model is
compiled with ``PERF_COUNT`` and ``INFERENCE_PRECISION_HINT=f32`` and each request's
``profiling_info`` (node name, type, ``exec_type`` = the kernel and precision that ran,
``real_time``, ``cpu_time``) is averaged over the runs.

Analytic FLOPs and bytes come from the ONNX graph (:mod:`zhisuan.profile.flops`) and are joined
to timed nodes by name; runtimes fuse nodes (ORT's ``FusedConv`` keeps the Conv's name, OpenVINO
names a fused node after one of its parts), so a timed node that matches no graph node has no
FLOPs, and the model's totals use the whole graph's FLOPs over the measured latency.

>>> from zhisuan.profile import profile_model
>>> result = profile_model("model.onnx", runs=20)  # doctest: +SKIP
>>> result.per_op_type[0].op_type, result.roofline.bound  # doctest: +SKIP
('Conv', 'compute')
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhisuan.errors import UserError
from zhisuan.profile.flops import NodeCost, node_costs
from zhisuan.profile.roofline import DevicePeaks, device_peaks
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record
from zhisuan.runtime.backend_onnxruntime import GraphLevel, parse_graph_level

__all__ = ["NodeProfile", "OpTypeProfile", "ProfileResult", "Roofline", "profile_model"]

Bound = Literal["memory", "compute"]

@dataclass(frozen=True)
class NodeProfile(Record):
    """One timed node: mean time per run, its share, and (when it matches a graph node) its work."""

    name: str
    op_type: str
    time_ms: float
    percent: float
    exec_type: str | None = None  # OpenVINO: the kernel that ran, e.g. brgemm_avx512_FP32
    flops: int | None = None
    bytes: int | None = None
    intensity: float | None = None
    gflops: float | None = None
    bound: Bound | None = None
    roofline_pct: float | None = None  # attained / min(peak, intensity x bandwidth)


@dataclass(frozen=True)
class OpTypeProfile(Record):
    op_type: str
    count: int
    time_ms: float
    percent: float
    flops: int
    bytes: int
    gflops: float | None


@dataclass(frozen=True)
class Roofline(Record):
    peak_gflops_measured: float
    peak_gflops_theoretical: float | None
    bandwidth_gbps_measured: float
    ridge_point: float
    model_intensity: float | None
    model_attained_gflops: float
    bound: Bound | None
    roofline_pct: float | None
    theoretical_basis: str
    method: str


@dataclass(frozen=True)
class ProfileResult(Record):
    """Per-operator time, analytic work, and the model's place on the device roofline."""

    model: str
    runtime: str
    runtime_info: Mapping[str, Any]
    batch: int
    runs: int
    warmup: int
    latency_ms: float  # mean wall time per run, measured around the runs
    latency_ms_p50: float
    node_time_ms: float  # sum of per-node mean times (less than latency: framework overhead)
    flops: int  # analytic, whole graph, per run
    bytes: int
    gflops: float  # flops / latency
    per_node: tuple[NodeProfile, ...]
    per_op_type: tuple[OpTypeProfile, ...]
    roofline: Roofline
    matched_time_pct: float  # share of node time whose node matched a graph node (has FLOPs)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def top(self, n: int = 10) -> tuple[NodeProfile, ...]:
        return self.per_node[:n]

    def to_dict(self) -> dict[str, Any]:
        # the whole-model figures are grouped under "totals", where the per-node ones begin
        fields = super().to_dict()
        totals = {key: fields.pop(key) for key in
                  ("latency_ms", "latency_ms_p50", "node_time_ms", "gflops", "flops", "bytes")}
        ordered: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "per_node":
                ordered["totals"] = totals
            ordered[key] = value
        return ordered


def profile_model(
    model: str | Path,
    *,
    runtime: Literal["onnxruntime", "openvino"] = "onnxruntime",
    runs: int = 20,
    warmup: int = 3,
    batch: int = 1,
    data: str | Path | None = None,
    threads: int | None = None,
    peaks: DevicePeaks | None = None,
    ort_optimization: GraphLevel | str = GraphLevel.ALL,
    progress: Progress = no_progress,
) -> ProfileResult:
    """Profile ``model`` (an ONNX file or zoo name) on ``runtime`` over ``runs`` timed runs.

    ``ort_optimization`` is ONNX Runtime's graph optimization level: ``all`` (its default, what a
    deployment runs) fuses and renames nodes; ``basic`` keeps one timed node per graph node, so
    every node gets its FLOPs. ``peaks`` skips measuring the device (e.g. in tests).
    """
    from zhisuan.graph import load_model
    from zhisuan.inputs import resolve_model, sample_inputs

    if runs < 1 or warmup < 0:
        raise UserError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    if runtime not in ("onnxruntime", "openvino"):
        raise UserError(f"profile supports the onnxruntime and openvino runtimes, not {runtime!r}")
    level = parse_graph_level(ort_optimization)
    path = resolve_model(model)
    feeds = sample_inputs(path, data=data, batch=batch)[0]
    proto = load_model(path)
    progress("computing analytic FLOPs and bytes per node")
    costs = {c.name: c for c in node_costs(proto, feeds)}
    outputs_to_node = {o: c for node, c in zip(proto.graph.node, costs.values(), strict=True) for o in node.output}
    first_input = {c.name: node.input[0] for node, c in zip(proto.graph.node, costs.values(), strict=True) if node.input}
    progress(f"profiling {runs} runs on {runtime}")
    if runtime == "onnxruntime":
        timed, wall, info = _profile_ort(path, feeds, runs, warmup, threads, level)
    else:
        timed, wall, info = _profile_openvino(path, feeds, runs, warmup, threads)
    progress("measuring the device's peak compute and bandwidth")
    peaks = peaks or device_peaks(threads)
    return _assemble(str(model), runtime, info, feeds, runs, warmup, wall, timed, costs, outputs_to_node,
                     first_input, peaks)


# ---------------------------------------------------------------------------------------------
# Runtimes: each returns [(name, op_type, mean ms, exec_type)], wall times per run (ms), info


def _profile_ort(
    path: Path, feeds: Mapping[str, np.ndarray], runs: int, warmup: int, threads: int | None, level: GraphLevel
) -> tuple[list[tuple[str, str, float, str | None]], list[float], dict[str, Any]]:
    from zhisuan.runtime import load_runtime

    with tempfile.TemporaryDirectory(prefix="zhisuan-profile-") as tmp:
        prefix = str(Path(tmp) / "ort")
        rt = load_runtime(path, "onnxruntime", intra_op_threads=threads, enable_profiling=True,
                          profile_file_prefix=prefix, graph_optimization_level=level)
        session = rt.session
        for _ in range(warmup):
            rt.run(feeds)
        wall = []
        for _ in range(runs):
            start = time.perf_counter()
            rt.run(feeds)
            wall.append((time.perf_counter() - start) * 1e3)
        trace_path = session.end_profiling()
        info = {**rt.info.to_dict(), "graph_optimization_level": level}
        events = json.loads(Path(trace_path).read_text(encoding="utf-8"))
        rt.close()
    return parse_ort_trace(events, skip_runs=warmup, runs=runs), wall, info


def parse_ort_trace(
    events: Sequence[Mapping[str, Any]], *, skip_runs: int = 0, runs: int | None = None
) -> list[tuple[str, str, float, str | None]]:
    """Per-node mean kernel time (ms per run) from an ONNX Runtime profile, warm-up runs dropped.

    Runs are delimited by the ``model_run`` session events; node events are attributed to the
    run whose time span holds them.
    """
    run_spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                       if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = run_spans[skip_runs:]
    if runs is not None:
        kept = kept[:runs]
    if not kept:
        raise UserError("the ONNX Runtime profile holds no model_run events")
    lo, hi = kept[0][0], kept[-1][1]
    totals: dict[str, float] = defaultdict(float)
    op_types: dict[str, str] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or not lo <= e.get("ts", -1) <= hi:
            continue
        node = name[: -len("_kernel_time")]
        totals[node] += float(e["dur"])
        op_types[node] = str(e.get("args", {}).get("op_name", "?"))
    return [(n, op_types[n], us / 1e3 / len(kept), None) for n, us in totals.items()]


def _profile_openvino(
    path: Path, feeds: Mapping[str, np.ndarray], runs: int, warmup: int, threads: int | None
) -> tuple[list[tuple[str, str, float, str | None]], list[float], dict[str, Any]]:
    import openvino as ov

    from zhisuan.runtime import load_runtime

    # fp32 (load_runtime's default precision) sets the f32 hint: on CPUs with avx512_bf16/AMX
    # OpenVINO would otherwise run f32 models in bf16. LATENCY is the runner's performance hint.
    with load_runtime(path, "openvino", intra_op_threads=threads or None, perf_count=True) as runtime:
        compiled = runtime.compiled_model
        request = compiled.create_infer_request()
        names = [p.get_any_name() for p in compiled.inputs]
        by_index = {i: np.asarray(feeds[n] if n in feeds else list(feeds.values())[i]) for i, n in enumerate(names)}
        for _ in range(warmup):
            request.infer(by_index)
        totals: dict[tuple[str, str, str], float] = defaultdict(float)
        wall = []
        for _ in range(runs):
            start = time.perf_counter()
            request.infer(by_index)
            wall.append((time.perf_counter() - start) * 1e3)
            for item in request.profiling_info:
                if str(item.status).endswith("EXECUTED") and "NOT" not in str(item.status):
                    totals[(item.node_name, item.node_type, item.exec_type)] += item.real_time.total_seconds() * 1e3
        info = {"runtime": "openvino", "version": ov.get_version(), "device": "cpu",
                "precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
                "intra_op_threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}
    return [(n, t, ms / runs, e) for (n, t, e), ms in totals.items()], wall, info


def _type_name(value: Any) -> str:
    # openvino.Type (e.g. <Type: 'float32'>) -> "f32"; plain strings pass through
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


# ---------------------------------------------------------------------------------------------
# Joining time with work, and the roofline


def _classify(flops: float, nbytes: float, seconds: float, peaks: DevicePeaks) -> tuple[
    float | None, float | None, Bound | None, float | None
]:
    intensity = flops / nbytes if nbytes else None
    gflops = flops / seconds / 1e9 if seconds > 0 else None
    if intensity is None or gflops is None or flops == 0:
        return intensity, gflops, None, None
    bound: Bound = "compute" if intensity >= peaks.ridge_point else "memory"
    ceiling = min(peaks.peak_gflops_measured, intensity * peaks.bandwidth_gbps_measured)
    return intensity, gflops, bound, 100.0 * gflops / ceiling


_FUSED_AS: dict[str, tuple[str, ...]] = {
    "FusedConv": ("Conv",), "Convolution": ("Conv",), "GroupConvolution": ("Conv",), "FusedGemm": ("Gemm",),
    "FullyConnected": ("MatMul", "Gemm"), "MVN": ("LayerNormalization",),
}


_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Mul"}


def _match(
    name: str, op_type: str, costs: Mapping[str, NodeCost], outputs_to_node: Mapping[str, NodeCost],
    first_input: Mapping[str, str],
) -> NodeCost | None:
    """The graph node a timed node stands for: same name, or its output's name (OpenVINO), or the
    name before a runtime's suffix (``conv/WithoutBiases``, ``r_nchwc``) — only if the op agrees.

    ORT's NCHWc Conv+activation is named after the activation's output: it gets the Conv's and
    the activation's FLOPs together (and the Conv's bytes: the fused node never writes the Conv
    output).
    """
    wanted = {op_type, op_type.removeprefix("Fused"), *_FUSED_AS.get(op_type, ())}
    keys = (name, name.removesuffix("_nchwc"), name.removesuffix("/WithoutBiases"), name.rsplit("/", 1)[0])
    for key in keys:
        cost = costs.get(key) or outputs_to_node.get(key)
        if cost is None:
            continue
        if (key == name and cost.name == name) or cost.op_type in wanted:
            return cost
        producer = outputs_to_node.get(first_input.get(cost.name, ""))
        if cost.op_type in _ACTIVATIONS and producer is not None and producer.op_type in wanted:
            return NodeCost(producer.name, producer.op_type, producer.flops + cost.flops,
                            producer.bytes, producer.weight_bytes, cost.output_shapes)
    return None


def _assemble(
    model: str, runtime: str, info: Mapping[str, Any], feeds: Mapping[str, np.ndarray], runs: int, warmup: int,
    wall: list[float], timed: list[tuple[str, str, float, str | None]], costs: Mapping[str, NodeCost],
    outputs_to_node: Mapping[str, NodeCost], first_input: Mapping[str, str], peaks: DevicePeaks,
) -> ProfileResult:
    node_total = sum(t for _, _, t, _ in timed) or 1e-12
    nodes = []
    matched_ms = 0.0
    for name, op_type, ms, exec_type in sorted(timed, key=lambda r: -r[2]):
        cost = _match(name, op_type, costs, outputs_to_node, first_input)
        if cost is None:
            nodes.append(NodeProfile(name, op_type, ms, 100.0 * ms / node_total, exec_type))
            continue
        matched_ms += ms
        intensity, gflops, bound, pct = _classify(cost.flops, cost.bytes, ms / 1e3, peaks)
        nodes.append(NodeProfile(name, op_type, ms, 100.0 * ms / node_total, exec_type, cost.flops, cost.bytes,
                                 intensity, gflops, bound, pct))
    by_type: dict[str, list[NodeProfile]] = defaultdict(list)
    for n in nodes:
        by_type[n.op_type].append(n)
    per_type = []
    for op_type, group in by_type.items():
        ms = sum(n.time_ms for n in group)
        flops = sum(n.flops or 0 for n in group)
        per_type.append(OpTypeProfile(op_type, len(group), ms, 100.0 * ms / node_total, flops,
                                      sum(n.bytes or 0 for n in group), flops / ms / 1e6 if ms > 0 and flops else None))
    per_type.sort(key=lambda o: -o.time_ms)
    total_flops = sum(c.flops for c in costs.values())
    total_bytes = sum(c.bytes for c in costs.values())
    latency = float(np.mean(wall))
    intensity, gflops, bound, pct = _classify(total_flops, total_bytes, latency / 1e3, peaks)
    roofline = Roofline(
        peak_gflops_measured=peaks.peak_gflops_measured, peak_gflops_theoretical=peaks.peak_gflops_theoretical,
        bandwidth_gbps_measured=peaks.bandwidth_gbps_measured, ridge_point=peaks.ridge_point,
        model_intensity=intensity, model_attained_gflops=gflops or 0.0, bound=bound, roofline_pct=pct,
        theoretical_basis=peaks.theoretical_basis, method=peaks.method,
    )
    batch = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
    notes = ("model bytes count every tensor once per node (inputs, weights, outputs): intermediate "
             "tensors that stay in cache are counted as memory traffic, so intensity is a lower bound",)
    return ProfileResult(
        model=model, runtime=runtime, runtime_info=dict(info), batch=batch, runs=runs, warmup=warmup,
        latency_ms=latency, latency_ms_p50=float(np.median(wall)), node_time_ms=sum(t for _, _, t, _ in timed),
        flops=total_flops, bytes=total_bytes, gflops=gflops or 0.0, per_node=tuple(nodes),
        per_op_type=tuple(per_type), roofline=roofline, matched_time_pct=100.0 * matched_ms / node_total,
        notes=notes,
    )
