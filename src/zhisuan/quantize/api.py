"""``quantize_model`` and ``sensitivity_analysis``: the public entry points (the CLI calls these)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.graph.namemap import NameMap, write_name_map
from zhisuan.quantize.calibration import (
    CALIB_SEED,
    METRIC_SEED,
    RANDOM_WARNING,
    Calibration,
    Feeds,
    load_calibration,
    zoo_feeds,
)
from zhisuan.quantize.config import QuantizeConfig
from zhisuan.quantize.engine import (
    Int8Builder,
    Prepared,
    convert_float16,
    prepare,
    quantizable_nodes,
    quantized_name_map,
    write_temp,
)
from zhisuan.quantize.metrics import OutputAgreement, ZooMetric, drop_pct, latency_ms
from zhisuan.quantize.search import (
    Candidate,
    Explorer,
    LayerSensitivity,
    Progress,
    budget_search,
    no_progress,
    sensitivities,
)


@dataclass(frozen=True)
class SensitivityResult:
    metric: str
    float_value: float
    int8_value: float
    int8_drop_pct: float
    layers: list[LayerSensitivity]
    measured: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "float_value": self.float_value, "int8_value": self.int8_value,
            "int8_drop_pct": self.int8_drop_pct, "measured": self.measured,
            "duration_s": round(self.duration_s, 3), "layers": [s.to_dict() for s in self.layers],
        }


@dataclass(frozen=True)
class QuantizeResult:
    """What was written to ``output_path`` and how it scores against the float model."""

    output_path: str
    mode: str
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    calibration: dict[str, Any] | None
    metric: str
    float_value: float
    quantized_value: float
    drop_pct: float
    max_drop_pct: float | None
    meets_budget: bool
    quantized_nodes: int
    float_layers: list[dict[str, Any]]
    sensitivity: list[dict[str, Any]] | None
    search: dict[str, Any] | None
    latency: dict[str, Any] | None
    float_size_bytes: int
    quantized_size_bytes: int
    name_map_entries: int
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def interrupted(self) -> bool:
        return bool(self.search and self.search.get("stopped") == "interrupted")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"interrupted": self.interrupted}


# --------------------------------------------------------------------------------------------------


def _load(model: str | Path | Any) -> tuple[Any, str | None, str]:
    """(ModelProto, zoo name or None, description) of a file, a zoo name or a ModelProto."""
    from zhisuan.graph import load_model

    if isinstance(model, str | Path):
        from zhisuan import zoo
        from zhisuan.graph.sources import resolve_model

        path = resolve_model(model)
        name = str(model) if (not Path(model).is_file() and str(model) in zoo.names()) else None
        return load_model(path), name, str(path)
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
        if self.config.metric.startswith("zoo:"):
            return ZooMetric(self.config.metric[4:], self.config.intra_op_threads)
        return OutputAgreement(self.float_path, self.metric_feeds, self.config.metric, self.config.intra_op_threads)


def _job(model: Any, config: QuantizeConfig, workdir: Path, *, data: str | Path | None, random: int | None,
         progress: Progress) -> _Job:
    proto, zoo_name, _ = _load(model)
    if config.metric.startswith("zoo:"):
        from zhisuan import zoo

        zoo.get(config.metric[4:])
        zoo_name = zoo_name or config.metric[4:]
    warnings: list[str] = []
    progress("loading calibration data", 0, None)
    calibration = load_calibration(proto, data=data, random=random, zoo_name=zoo_name, seed=CALIB_SEED + config.seed)
    if calibration.warning and config.int8 and config.static:
        warnings.append(calibration.warning)
    # Metric inputs: held out from calibration where we can make more (zoo, random); user data is reused.
    if data is not None:
        metric_feeds = calibration.feeds
        if config.metric in ("cosine", "top1"):
            warnings.append("the metric is measured on the calibration data itself (no held-out set was given)")
    else:
        made = zoo_feeds(zoo_name, batches=4, seed=METRIC_SEED + config.seed) if zoo_name else None
        if made is None:
            from zhisuan.graph.sources import sample_inputs

            made = sample_inputs(proto, random=4, batch=4, seed=METRIC_SEED + config.seed)
            if config.metric in ("cosine", "top1"):
                warnings.append(f"the {config.metric} metric is measured on random inputs")
        metric_feeds = made
    progress("preprocessing (optimize passes)", 0, None)
    prepared = prepare(proto, config, calibration.feeds)
    float_path = write_temp(prepared.model, workdir, "prepared")
    return _Job(config, prepared, float_path, calibration, metric_feeds, workdir, zoo_name, warnings)


def _workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="zhisuan-quantize-")


def _saver(job: _Job, out: Path) -> Any:
    from zhisuan.graph import load_model, save_model

    def save(path: Path, _cand: Candidate | None = None) -> None:
        model = load_model(path)
        name_map = job.prepared.name_map.then(quantized_name_map(job.prepared.model, model))
        write_name_map(model, name_map)
        save_model(model, out)  # atomic: a reader never sees half a model

    return save


def _explorer(job: _Job, evaluator: Any, reference: float, deadline: float, out: Path | None,
              progress: Progress) -> tuple[Explorer, Int8Builder]:
    builder = Int8Builder(job.float_path, job.config, job.calibration.feeds, job.workdir)
    explorer = Explorer(
        build=lambda p, keep: builder.build(p, keep), score=evaluator, reference=reference,
        higher_is_better=evaluator.higher_is_better, max_drop_pct=job.config.max_drop_pct,
        deadline=deadline, workdir=job.workdir,
        on_best=_saver(job, out) if out is not None else (lambda _p, _c: None), progress=progress,
    )
    return explorer, builder


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

    Example:
        >>> from zhisuan.quantize import quantize_model, QuantizeConfig
        >>> r = quantize_model("ppocr-rec", "rec-int8.onnx",
        ...                    config=QuantizeConfig(metric="zoo:ppocr-rec", max_drop_pct=1))  # doctest: +SKIP
        >>> r.drop_pct, [f["node"] for f in r.float_layers]  # doctest: +SKIP
    """
    config = config or QuantizeConfig()
    progress = progress or no_progress
    out = Path(output)
    start = time.monotonic()
    deadline = start + config.time_budget_s
    with _workdir() as tmp:
        job = _job(model, config, Path(tmp), data=data, random=random, progress=progress)
        evaluator = job.evaluator()
        progress(f"scoring the float model ({evaluator.name})", 0, None)
        reference = evaluator(job.float_path)
        sens_rows: list[LayerSensitivity] | None = None
        search_info: dict[str, Any] | None = None
        float_layers: list[dict[str, Any]] = []
        if config.int8:
            nodes = quantizable_nodes(job.prepared.model, config)
            if not nodes:
                raise UserError(f"the model has no {', '.join(config.quantized_ops())} node to quantize")
            explorer, _ = _explorer(job, evaluator, reference, deadline, out, progress)
            progress("quantizing every layer to INT8", 0, None)
            base = explorer.evaluate([], timed=False)  # always: the baseline is written even with budget 0
            interrupted = False
            if config.sensitivity or (config.max_drop_pct is not None and not base.meets_budget):
                try:
                    sens_rows = sensitivities(explorer, nodes, base)
                except KeyboardInterrupt:
                    interrupted = True
            if config.max_drop_pct is not None:
                if interrupted:
                    outcome_stop, float_layers = "interrupted", []
                else:
                    outcome = budget_search(explorer, sens_rows or [], base)
                    outcome_stop, float_layers = outcome.stopped, outcome.float_layers
                search_info = {
                    "stopped": outcome_stop, "candidates": len(explorer.history),
                    "history": [c.to_dict() for c in explorer.history],
                    "time_budget_s": config.time_budget_s,
                }
            best = explorer.best
            assert best is not None
            value, n_float = best.value, len(best.float_nodes)
            if not float_layers and best.float_nodes:
                gains = {s.node: s for s in sens_rows or []}
                float_layers = [{"node": n, "op_type": gains[n].op_type if n in gains else None,
                                 "sensitivity_gain_pct": gains[n].gain_pct if n in gains else None,
                                 "sensitivity_rank": gains[n].rank if n in gains else None,
                                 "reason": "kept in float by the best candidate found"} for n in best.float_nodes]
            quantized = len(nodes) - n_float
        else:
            progress(f"converting to {config.mode.value}", 0, None)
            converted = convert_float16(job.prepared.model, config.mode)
            path = write_temp(converted, job.workdir, "fp16")
            value = evaluator(path)
            _saver(job, out)(path)
            quantized = len(job.prepared.model.graph.node)
        latency = None
        if measure_latency:
            progress("timing float vs quantized", 0, None)
            feed = job.metric_feeds[0]
            timing = latency_ms({"float": job.float_path, "quantized": out}, feed, threads=config.intra_op_threads)
            latency = {**timing, "speedup": timing["float"]["median_ms"] / timing["quantized"]["median_ms"],
                       "threads": config.intra_op_threads,
                       "batch": {k: list(v.shape) for k, v in feed.items()}}
        from zhisuan.graph import load_model, read_name_map

        written = load_model(out)
        name_map = read_name_map(written) or NameMap({})
        drop = drop_pct(reference, value, evaluator.higher_is_better)
        return QuantizeResult(
            output_path=str(out), mode=config.mode.value, config=config.to_dict(),
            preprocessing=job.prepared.to_dict(),
            calibration=job.calibration.to_dict() if config.int8 and config.static else None,
            metric=evaluator.name, float_value=reference, quantized_value=value, drop_pct=drop,
            max_drop_pct=config.max_drop_pct,
            meets_budget=config.max_drop_pct is None or drop <= config.max_drop_pct + 1e-9,
            quantized_nodes=quantized, float_layers=float_layers,
            sensitivity=[s.to_dict() for s in sens_rows] if sens_rows is not None else None,
            search=search_info, latency=latency,
            float_size_bytes=os.path.getsize(job.float_path), quantized_size_bytes=os.path.getsize(out),
            name_map_entries=len(name_map.mapping), warnings=job.warnings,
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
    progress = progress or no_progress
    start = time.monotonic()
    with _workdir() as tmp:
        job = _job(model, config, Path(tmp), data=data, random=random, progress=progress)
        evaluator = job.evaluator()
        reference = evaluator(job.float_path)
        explorer, _ = _explorer(job, evaluator, reference, start + config.time_budget_s, None, progress)
        base = explorer.evaluate([], timed=False)
        rows = sensitivities(explorer, quantizable_nodes(job.prepared.model, config), base)
    return SensitivityResult(evaluator.name, reference, base.value, base.drop_pct, rows,
                             sum(r.gain_pct is not None for r in rows), time.monotonic() - start)


__all__ = ["RANDOM_WARNING", "QuantizeResult", "SensitivityResult", "quantize_model", "sensitivity_analysis"]
