"""``quantize_model`` and ``sensitivity_analysis``: the public entry points (the CLI calls these)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.graph.namemap import NameMap, write_name_map
from zhisuan.progress import Progress, no_progress
from zhisuan.quantize.calibration import (
    CALIB_SEED,
    METRIC_SEED,
    RANDOM_WARNING,
    Calibration,
    CalibrationInfo,
    Feeds,
    load_calibration,
)
from zhisuan.quantize.config import DEFAULT_STATIC_OPS, MetricKind, Mode, QuantizeConfig
from zhisuan.quantize.engine import (
    Int8Builder,
    Prepared,
    Preprocessing,
    check_exclusions,
    convert_float16,
    prepare,
    quantizable_nodes,
    quantized_name_map,
    write_temp,
)
from zhisuan.quantize.metrics import (
    LatencyComparison,
    OutputAgreement,
    Timing,
    ZooMetric,
    drop_pct,
    latency_ms,
)
from zhisuan.quantize.policy import MIN_SPEEDUP, Contender, PolicyDecision, Selection, decide
from zhisuan.quantize.search import (
    Candidate,
    Explorer,
    FloatLayer,
    LayerSensitivity,
    SearchResult,
    Stopped,
    budget_search,
    float_layers,
    sensitivities,
)
from zhisuan.results import Record


@dataclass(frozen=True)
class SensitivityResult(Record):
    """Every quantizable layer ranked by ``gain_pct`` (see :class:`LayerSensitivity`); ``measured``:
    how many the time budget left time for."""

    metric: str
    float_value: float
    int8_value: float
    int8_drop_pct: float
    measured: int
    duration_s: float
    layers: tuple[LayerSensitivity, ...]


@dataclass(frozen=True)
class QuantizeResult(Record):
    """What was written to ``output_path`` and how it scores against the float model.

    ``mode`` is what was asked; ``chosen`` what was written (in ``auto``: ``int8``,
    ``int8-dynamic`` or ``fp32``), with the contenders and the reason in ``policy``.
    """

    output_path: str
    mode: str
    chosen: str
    backend: str
    config: QuantizeConfig
    preprocessing: Preprocessing
    calibration: CalibrationInfo | None  # static INT8 only
    metric: str
    float_value: float
    quantized_value: float
    drop_pct: float
    max_drop_pct: float | None
    meets_budget: bool
    quantized_nodes: int
    float_layers: tuple[FloatLayer, ...]
    sensitivity: tuple[LayerSensitivity, ...] | None
    search: SearchResult | None
    latency: LatencyComparison | None
    float_size_bytes: int
    quantized_size_bytes: int
    name_map_entries: int
    policy: PolicyDecision | None = None  # auto only
    selection: Selection | None = None  # static INT8 only
    warnings: tuple[str, ...] = ()
    duration_s: float = 0.0

    @property
    def interrupted(self) -> bool:
        return self.search is not None and self.search.stopped == "interrupted"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "interrupted": self.interrupted}


# --------------------------------------------------------------------------------------------------


def _load(model: str | Path | Any) -> tuple[Any, str | None, str]:
    """(ModelProto, zoo name or None, description) of a file, a zoo name or a ModelProto."""
    from zhisuan.graph import load_model

    if isinstance(model, str | Path):
        from zhisuan.inputs import resolve

        ref = resolve(model, accept=("onnx", "zoo", "package"))
        path = ref.file()
        return load_model(path), ref.zoo_name, str(path)
    if not hasattr(model, "graph"):
        raise UserError(f"expected an ONNX file, a zoo name or an onnx.ModelProto, got {type(model).__name__}")
    return model, None, "<ModelProto>"


@dataclass
class _Job:
    """Everything one run shares: prepared float model, calibration, metric, builder, work directory."""

    config: QuantizeConfig
    prepared: Prepared
    float_path: Path
    calibration: Calibration | None
    metric_feeds: Feeds
    workdir: Path
    zoo_name: str | None
    warnings: list[str]

    def evaluator(self) -> Any:
        cfg = self.config
        if cfg.metric.zoo_name is not None:
            return ZooMetric(cfg.metric.zoo_name, cfg.intra_op_threads, backend=cfg.backend)
        return OutputAgreement(self.float_path, self.metric_feeds, cfg.metric.kind, cfg.intra_op_threads,
                               backend=cfg.backend)

    def latency(self, float_: Timing, quantized: Timing) -> LatencyComparison:
        return LatencyComparison.of(float_, quantized, threads=self.config.intra_op_threads,
                                    backend=self.config.backend, feed=self.metric_feeds[0])


def _job(model: Any, config: QuantizeConfig, workdir: Path, *, data: str | Path | None, random: int | None,
         progress: Progress) -> _Job:
    proto, zoo_name, _ = _load(model)
    metric = config.metric
    if metric.kind is MetricKind.ZOO:
        from zhisuan import zoo

        zoo.get(metric.zoo_name)
        zoo_name = zoo_name or metric.zoo_name
    warnings: list[str] = []
    if config.int8 and config.reduce_range is None and config.weights_7bit:
        warnings.append("INT8 weights use 7 bits (reduce_range): this x86 CPU has no VNNI, where ONNX Runtime's "
                        "u8 x s8 kernels saturate 8-bit weights; --reduce-range/--full-range overrides")
    progress("loading calibration data")
    calibration = load_calibration(proto, data=data, random=random, zoo_name=zoo_name, seed=CALIB_SEED + config.seed)
    if calibration.warning and config.int8 and config.static:
        warnings.append(calibration.warning)
    # Metric inputs: held out from calibration where we can make more (zoo, random); user data is reused.
    if data is not None:
        metric_feeds = calibration.feeds
        if metric.compares_outputs:
            warnings.append("the metric is measured on the calibration data itself (no held-out set was given)")
    else:
        from zhisuan.inputs import input_source

        # count=4 feeds: 4 held-out zoo feeds, else 4 random feeds of 4 rows each
        made = input_source(zoo_name, split="calib", count=4, batch=4, seed=METRIC_SEED + config.seed).make(proto)
        if not made.realistic and metric.compares_outputs:
            warnings.append(f"the {metric} metric is measured on random inputs")
        metric_feeds = made.feeds
    progress("preprocessing (optimize passes)")
    prepared = prepare(proto, config, calibration.feeds)
    check_exclusions(proto, prepared.model, config)
    float_path = write_temp(prepared.model, workdir, "prepared")
    return _Job(config, prepared, float_path, calibration, metric_feeds, workdir, zoo_name, warnings)


def _workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="zhisuan-quantize-")


def _saver(job: _Job, *targets: Path) -> Any:
    from zhisuan.graph import load_model, save_model

    def save(path: Path, _cand: Candidate | None = None) -> None:
        model = load_model(path)
        name_map = job.prepared.name_map.then(quantized_name_map(job.prepared.model, model))
        write_name_map(model, name_map)
        for target in targets:
            save_model(model, target)  # atomic: a reader never sees half a model

    return save


@dataclass
class _Track:
    """One INT8 mode: the all-INT8 baseline, then (when asked or needed) sensitivity and the budgeted
    search. Its best model so far is a file in the work directory (and any ``saves``)."""

    mode: Mode
    config: QuantizeConfig
    nodes: list[tuple[str, str]]
    builder: Int8Builder
    explorer: Explorer
    path: Path
    base: Candidate
    sensitivity: tuple[LayerSensitivity, ...] | None = None
    search: SearchResult | None = None
    searched_layers: tuple[FloatLayer, ...] = ()

    @property
    def best(self) -> Candidate:
        assert self.explorer.best is not None
        return self.explorer.best

    @property
    def value(self) -> float:
        return self.best.value

    @property
    def drop_pct(self) -> float:
        return self.best.drop_pct

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return self.best.float_nodes

    @property
    def layers(self) -> int:
        return len(self.nodes)

    @property
    def float_layers(self) -> tuple[FloatLayer, ...]:
        if self.searched_layers or not self.float_nodes:
            return self.searched_layers
        return float_layers(self.float_nodes, self.sensitivity or ())

    @property
    def selection(self) -> Selection | None:
        return self.builder.selection(self.float_nodes) if self.config.static else None

    def run_search(self, *, sensitivity: bool, budget: bool) -> None:
        """Per-layer sensitivity and/or the budgeted search (see zhisuan.quantize.search)."""
        interrupted = False
        if sensitivity or (budget and not self.base.meets_budget):
            try:
                self.sensitivity = tuple(sensitivities(self.explorer, self.nodes, self.base))
            except KeyboardInterrupt:
                interrupted = True
        if not budget:
            return
        stopped: Stopped
        if interrupted:
            stopped = "interrupted"
        else:
            outcome = budget_search(self.explorer, self.sensitivity or (), self.base)
            stopped, self.searched_layers = outcome.stopped, outcome.float_layers
        history = tuple(self.explorer.history)
        self.search = SearchResult(stopped, len(history), history, self.config.time_budget_s)


def _start_track(job: _Job, config: QuantizeConfig, evaluator: Any, reference: float, deadline: float,
                 saves: tuple[Path, ...], progress: Progress, budget: float | None) -> _Track:
    """Build and score all-INT8 in ``config.mode`` (always written, even with a zero time budget)."""
    nodes = quantizable_nodes(job.prepared.model, config)
    if not nodes:
        raise UserError(_nothing_to_quantize(job, config))
    best_path = job.workdir / f"best-{config.mode.value}.onnx"
    builder = Int8Builder(job.float_path, config, job.calibration.feeds, job.workdir)
    explorer = Explorer(
        build=lambda p, keep: builder.build(p, keep), score=evaluator, reference=reference,
        higher_is_better=evaluator.higher_is_better, max_drop_pct=budget,
        deadline=deadline, workdir=job.workdir, on_best=_saver(job, best_path, *saves), progress=progress,
    )
    progress(f"quantizing every layer ({config.mode.value})")
    base = explorer.evaluate([], timed=False)
    return _Track(config.mode, config, nodes, builder, explorer, best_path, base)


def _nothing_to_quantize(job: _Job, config: QuantizeConfig) -> str:
    from onnx import AttributeProto

    ops = ", ".join(config.quantized_ops() if config.op_types or not config.static else DEFAULT_STATIC_OPS)
    message = f"{config.mode.value}: the model has no {ops} node to quantize"
    nested = [n.name for n in job.prepared.model.graph.node
              if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute)]
    if nested:
        message += (f" at the top level; its layers sit inside control-flow subgraphs ({', '.join(nested[:3])}), "
                    "which ONNX Runtime's quantizer leaves in float")
    return message


def _auto(job: _Job, evaluator: Any, reference: float, deadline: float, out: Path,
          progress: Progress) -> tuple[_Track | None, PolicyDecision, LatencyComparison]:
    """``--mode auto``: static INT8, dynamic INT8 and the float model timed together on the backend;
    the fastest that meets the budget wins (see policy.choose). When static INT8 is faster than
    float but misses the budget, the search for layers to keep in float runs (bounded by the time
    budget) and its best model is timed again; when it is not faster, no search can make it so."""
    config = job.config
    budget = config.budget_pct
    assert budget is not None
    tracks: dict[Mode, _Track] = {}
    skipped: list[str] = []
    for mode in (Mode.INT8, Mode.INT8_DYNAMIC):
        mode_config = replace(config, mode=mode, max_drop_pct=budget)
        if not quantizable_nodes(job.prepared.model, mode_config):
            skipped.append(_nothing_to_quantize(job, mode_config))
            continue
        saves = (out,) if not tracks else ()  # the first track's best model is on disk at once
        tracks[mode] = _start_track(job, mode_config, evaluator, reference, deadline, saves, progress, budget)

    def timed() -> tuple[dict[str, Timing], list[Contender]]:
        progress(f"timing float and INT8 candidates on {config.backend}")
        paths = {"fp32": job.float_path, **{m.value: t.path for m, t in tracks.items()}}
        timing = latency_ms(paths, job.metric_feeds[0], threads=config.intra_op_threads, backend=config.backend)
        fp32 = timing["fp32"]
        rows = [Contender("fp32", reference, 0.0, True, fp32.median_ms, fp32.p10_ms, fp32.p90_ms)]
        for mode, track in tracks.items():
            t = timing[mode.value]
            rows.append(Contender(mode.value, track.value, track.drop_pct, track.drop_pct <= budget + 1e-9,
                                  t.median_ms, t.p10_ms, t.p90_ms, len(track.float_nodes)))
        return timing, rows

    timing, contenders = timed()
    static = tracks.get(Mode.INT8)
    notes = list(skipped)
    if static is not None:
        row = next(c for c in contenders if c.name == "int8")
        pays = timing["fp32"].median_ms / row.median_ms >= MIN_SPEEDUP
        if config.sensitivity or (not row.meets_budget and pays):
            static.run_search(sensitivity=config.sensitivity, budget=not row.meets_budget and pays)
            if static.float_nodes:
                timing, contenders = timed()
        elif not row.meets_budget:
            notes.append("no search for layers to keep in float: all-INT8 is not faster than float, so no "
                         "mixed model can be")
    policy = decide(contenders, budget_pct=budget, notes=notes)
    chosen = tracks.get(Mode(policy.chosen)) if policy.chosen != "fp32" else None
    _saver(job, out)(chosen.path if chosen else job.float_path)
    return static if chosen is None else chosen, policy, job.latency(timing["fp32"], timing[policy.chosen])


def quantize_model(
    model: str | Path | Any,
    output: str | Path,
    *,
    config: QuantizeConfig | None = None,
    data: str | Path | None = None,
    random: int | None = None,
    measure_latency: bool = True,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize ``model`` (ONNX file, zoo name or ModelProto) and write the result to ``output``.

    The default mode, ``auto``, builds static INT8 (integer islands, see
    :mod:`zhisuan.quantize.policy`; with the fewest layers kept in float that meet the metric
    budget), dynamic INT8 where the model has weighted MatMul/Gemm layers, and times them against the
    float model on ``config.backend``: the fastest that meets the budget is written, and the float
    model when no INT8 variant is both within the budget and faster (the result says why).

    Example:
        >>> from zhisuan.quantize import quantize_model, QuantizeConfig
        >>> r = quantize_model("ppocr-rec", "rec-int8.onnx",
        ...                    config=QuantizeConfig(metric="zoo:ppocr-rec", max_drop_pct=1))  # doctest: +SKIP
        >>> r.chosen, r.drop_pct, [f.node for f in r.float_layers]  # doctest: +SKIP
    """
    config = config or QuantizeConfig()
    progress = progress or no_progress
    out = Path(output)
    start = time.monotonic()
    deadline = start + config.time_budget_s
    with _workdir() as tmp:
        job = _job(model, config, Path(tmp), data=data, random=random, progress=progress)
        evaluator = job.evaluator()
        progress(f"scoring the float model ({evaluator.name})")
        reference = evaluator(job.float_path)
        track: _Track | None = None
        policy: PolicyDecision | None = None
        latency: LatencyComparison | None = None
        chosen = config.mode.value
        if config.mode is Mode.AUTO:
            track, policy, timed = _auto(job, evaluator, reference, deadline, out, progress)
            chosen = policy.chosen
            latency = timed if measure_latency else None
        elif config.int8:
            track = _start_track(job, config, evaluator, reference, deadline, (out,), progress, config.max_drop_pct)
            track.run_search(sensitivity=config.sensitivity, budget=config.max_drop_pct is not None)
        else:
            progress(f"converting to {config.mode.value}")
            converted = convert_float16(job.prepared.model, config.mode)
            path = write_temp(converted, job.workdir, "fp16")
            fp16_value = evaluator(path)
            _saver(job, out)(path)
        if chosen == "fp32":
            value, quantized = reference, 0
        elif track is not None:
            value, quantized = track.value, track.layers - len(track.float_nodes)
        else:
            value, quantized = fp16_value, len(job.prepared.model.graph.node)
        if measure_latency and latency is None:
            progress(f"timing float vs quantized on {config.backend}")
            timing = latency_ms({"float": job.float_path, "quantized": out}, job.metric_feeds[0],
                                threads=config.intra_op_threads, backend=config.backend)
            latency = job.latency(timing["float"], timing["quantized"])
        from zhisuan.graph import load_model, read_name_map

        written = load_model(out)
        name_map = read_name_map(written) or NameMap({})
        drop = drop_pct(reference, value, evaluator.higher_is_better)
        budget = config.budget_pct
        warnings = list(job.warnings)
        if policy is not None and chosen == "fp32":
            built = policy.contender("int8") is not None
            warnings.append(f"{out.name} is the float model: {policy.reason}"
                            + ("; --mode int8 forces static INT8" if built else ""))
        return QuantizeResult(
            output_path=str(out), mode=config.mode.value, chosen=chosen, backend=config.backend,
            config=config, preprocessing=job.prepared.report,
            calibration=job.calibration.info if config.static else None,
            metric=evaluator.name, float_value=reference, quantized_value=value, drop_pct=drop,
            max_drop_pct=budget, meets_budget=budget is None or drop <= budget + 1e-9,
            quantized_nodes=quantized, float_layers=track.float_layers if track and chosen != "fp32" else (),
            sensitivity=track.sensitivity if track else None, search=track.search if track else None,
            latency=latency, float_size_bytes=os.path.getsize(job.float_path),
            quantized_size_bytes=os.path.getsize(out), name_map_entries=len(name_map.mapping), policy=policy,
            selection=track.selection if track and chosen != "fp32" else None, warnings=tuple(warnings),
            duration_s=round(time.monotonic() - start, 3),
        )


def sensitivity_analysis(
    model: str | Path | Any,
    *,
    config: QuantizeConfig | None = None,
    data: str | Path | None = None,
    random: int | None = None,
    progress: Progress | None = None,
) -> SensitivityResult:
    """Rank the quantizable layers by how much of the metric keeping each alone in float recovers.

    Example:
        >>> from zhisuan.quantize import sensitivity_analysis, QuantizeConfig
        >>> res = sensitivity_analysis("efficientnet-lite0", config=QuantizeConfig(metric="top1"))  # doctest: +SKIP
        >>> [(s.node, round(s.gain_pct, 2)) for s in res.layers[:3]]  # doctest: +SKIP
    """
    config = config or QuantizeConfig()
    if not config.int8:
        raise UserError("sensitivity analysis applies to the int8 modes")
    if config.mode is Mode.AUTO:  # sensitivity is a property of one mode: static INT8
        config = replace(config, mode=Mode.INT8)
    progress = progress or no_progress
    start = time.monotonic()
    with _workdir() as tmp:
        job = _job(model, config, Path(tmp), data=data, random=random, progress=progress)
        evaluator = job.evaluator()
        reference = evaluator(job.float_path)
        builder = Int8Builder(job.float_path, config, job.calibration.feeds, job.workdir)
        explorer = Explorer(
            build=lambda p, keep: builder.build(p, keep), score=evaluator, reference=reference,
            higher_is_better=evaluator.higher_is_better, max_drop_pct=config.max_drop_pct,
            deadline=start + config.time_budget_s, workdir=job.workdir, on_best=lambda _p, _c: None,
            progress=progress,
        )
        base = explorer.evaluate([], timed=False)
        rows = sensitivities(explorer, quantizable_nodes(job.prepared.model, config), base)
    return SensitivityResult(evaluator.name, reference, base.value, base.drop_pct,
                             sum(r.gain_pct is not None for r in rows), round(time.monotonic() - start, 3),
                             tuple(rows))


__all__ = ["RANDOM_WARNING", "QuantizeResult", "SensitivityResult", "quantize_model", "sensitivity_analysis"]
