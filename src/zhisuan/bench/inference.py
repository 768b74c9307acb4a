"""EV-5 inference performance: ``bench_model`` (the engine of ``zhisuan bench``) and the suite tasks.

:func:`bench_model` loads a model (an ONNX file or a zoo name) on a zhisuan runtime, builds the
sample set (a zoo model's own evaluation inputs, ``.npz`` files, or random inputs from the
signature), calibrates, and runs one MLPerf LoadGen scenario (:mod:`zhisuan.bench.loadgen`).
:func:`bench_scenarios` runs several scenarios on one calibration and, for zoo models with an
evaluation set, an AccuracyOnly LoadGen pass whose responses are scored by the zoo's metric and
compared with the zoo's FP32 score of the same model (fail when more than 1% absolute lower).

The suite tasks (``EV-5.<model>``) run the four scenarios plus the accuracy pass per model and
``EV-5.gpt2-small`` measures LLM token latencies (:mod:`zhisuan.bench.llm`).

>>> from zhisuan.bench.inference import bench_model
>>> r = bench_model("efficientnet-lite0", scenario="offline", threads=2, duration_s=5)  # doctest: +SKIP
>>> r.valid, r.samples_per_s, r.batch_size  # doctest: +SKIP
(True, 61.3, 1)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.bench.interference import Interference, InterferenceSampler, gpus_of
from zhisuan.bench.loadgen import (
    SCENARIOS,
    BatchRunner,
    BenchResult,
    LoadGenSettings,
    SampleSet,
    Scenario,
    ScenarioPlan,
    calibrate,
    npz_samples,
    random_samples,
    run_loadgen,
    run_scenario,
)
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task, task_provider
from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record, plain

__all__ = [
    "AccuracyResult",
    "ModelBench",
    "ZooData",
    "bench_model",
    "bench_scenarios",
    "zoo_data",
]

#: Random samples made for a model without an evaluation set when neither --data nor --random is given.
DEFAULT_RANDOM_SAMPLES = 64
#: An accuracy more than this far (absolute) below the zoo's FP32 score fails.
MAX_ACCURACY_DROP = 0.01


# ---------------------------------------------------------------------------------------------
# Zoo models' evaluation inputs as LoadGen samples, and their metric


@dataclass(frozen=True)
class ZooData:
    """A zoo model's scored evaluation samples (its ``samples`` hook) as a LoadGen :class:`SampleSet`.

    ``score(outputs)`` takes one output dict per sample, in sample order, and returns the zoo
    metric's value and its secondary figures, computed as the zoo's own evaluation does.
    """

    model: str
    samples: SampleSet
    metric: str
    higher_is_better: bool
    score: Callable[[Sequence[Mapping[str, np.ndarray]]], tuple[float, dict[str, float]]]


def zoo_data(name: str, specs: Sequence[Any]) -> ZooData | None:
    """The evaluation samples and metric of zoo model ``name`` for a runtime with ``specs``, if it has them."""
    from zhisuan import zoo

    entry = zoo.get(name)
    if entry.samples is None:
        return None
    scored = entry.samples(specs)
    return ZooData(name, SampleSet(scored.samples, scored.description, pad=dict(scored.pad)), scored.metric,
                   scored.higher_is_better, scored.score)


def _scored_models() -> list[str]:
    from zhisuan import zoo

    return [e.name for e in zoo.entries() if e.samples is not None]


# ---------------------------------------------------------------------------------------------
# Loading, samples, accuracy


#: Scenarios with idle gaps between queries, where latency is measured.
LATENCY_SCENARIOS = frozenset({Scenario.SINGLESTREAM, Scenario.MULTISTREAM, Scenario.SERVER})


def no_spinning(runtime: str, device: str, scenarios: Sequence[str], threads: int | None) -> bool:
    """Whether ONNX Runtime's intra-op threads should sleep instead of spinning when idle: in the
    latency scenarios, on a CPU, when they take every core (see
    :func:`zhisuan.runtime.backend_onnxruntime.idle_pool_config`; 1 of 3 efficientnet-lite0 Server
    runs VALID first time with spinning on 2 cores, 3 of 3 without)."""
    from zhisuan.runtime.backend_onnxruntime import idle_pool_config

    return (runtime == "onnxruntime" and not device.startswith(("cuda", "tensorrt"))
            and bool(LATENCY_SCENARIOS.intersection(scenarios)) and bool(idle_pool_config(threads)))


def _load(model: str, runtime: str, *, precision: str, device: str, threads: int | None,
          spin: bool = True) -> tuple[Any, str | None]:
    """The loaded runtime and the zoo name (None for a plain file)."""
    from zhisuan.inputs import resolve
    from zhisuan.runtime import load_runtime

    ref = resolve(model)
    if runtime == "torch":
        if ref.kind != "zoo":
            raise UserError("--runtime torch benchmarks a zoo model's PyTorch module; give a zoo name, not a file")
        target: Any = ref.torch_model()
    else:
        target = resolve(ref, accept=("onnx", "openvino", "zoo", "package")).file()
    zoo_name = ref.zoo_name
    extra = {} if spin else {"session_config": {"session.intra_op.allow_spinning": "0"}}  # see no_spinning
    return load_runtime(target, runtime, device=device, precision=precision, intra_op_threads=threads,
                        **extra), zoo_name


def _samples(rt: Any, zoo: ZooData | None, *, data: str | Path | None, random: int | None, seed: int,
             dim_values: Mapping[str, int] | None) -> SampleSet:
    if data is not None and random is not None:
        raise UserError("give either --data or --random, not both")
    if data is not None:
        return npz_samples(data, rt.inputs())
    if random is None and zoo is not None:
        return zoo.samples
    return random_samples(rt.inputs(), random or DEFAULT_RANDOM_SAMPLES, seed=seed, dim_values=dim_values)


@dataclass(frozen=True)
class AccuracyResult(Record):
    """The AccuracyOnly LoadGen pass: every sample once, responses scored by the zoo metric."""

    model: str
    metric: str
    value: float
    secondary: dict[str, float]
    samples: int
    responses: int
    accuracy_log_entries: int | None
    reference: float | None
    reference_source: str
    drop: float | None
    passed: bool
    max_drop: float
    duration_s: float
    log_dir: str | None


def _reference_score(name: str, threads: int | None) -> float:
    from zhisuan import zoo

    return float(zoo.evaluate(name, runtime="onnxruntime", intra_op_threads=threads).value)


def check_accuracy(
    runner: BatchRunner,
    data: ZooData,
    *,
    batch: int,
    reference: float | None,
    reference_source: str,
    log_dir: str | Path | None = None,
    progress: Progress = no_progress,
) -> AccuracyResult:
    """Run LoadGen's AccuracyOnly mode (Offline) over ``data``'s samples and score the responses."""

    if runner.samples is not data.samples:
        runner = BatchRunner(runner.runtime, data.samples, output_names=runner.output_names)
    start = time.perf_counter()
    plan = ScenarioPlan(LoadGenSettings(Scenario.OFFLINE, mode="accuracy", min_duration_ms=0, offline_expected_qps=1.0),
                        batch, 0.0, 1.0, ("AccuracyOnly: every sample exactly once",))
    run = run_loadgen(runner, plan, log_dir=log_dir, collect=True, progress=progress, label=f"{data.model}: accuracy")
    if run.sut_errors:
        raise UserError(f"{data.model}: the model failed during the accuracy run: {run.sut_errors[0]}")
    n = len(data.samples)
    missing = [i for i in range(n) if i not in run.responses]
    if missing:
        raise UserError(f"{data.model}: the accuracy run returned no response for samples {missing[:10]}")
    value, secondary = data.score([run.responses[i] for i in range(n)])
    drop = None if reference is None else (reference - value if data.higher_is_better else value - reference)
    return AccuracyResult(
        model=data.model, metric=data.metric, value=float(value), secondary=secondary, samples=n,
        responses=len(run.responses), accuracy_log_entries=run.accuracy_log_entries, reference=reference,
        reference_source=reference_source, drop=drop, passed=drop is None or drop <= MAX_ACCURACY_DROP,
        max_drop=MAX_ACCURACY_DROP, duration_s=time.perf_counter() - start,
        log_dir=str(run.log_dir) if run.log_dir else None,
    )


# ---------------------------------------------------------------------------------------------
# The public API


@dataclass(frozen=True)
class ModelBench:
    """Several scenarios of one model on one calibration, and the accuracy pass."""

    model: str
    results: tuple[BenchResult, ...]
    accuracy: AccuracyResult | None
    runtime: dict[str, Any]
    calibration: dict[str, Any]
    load_s: float
    windows: dict[Scenario, Any] = field(default_factory=dict, repr=False, compare=False)

    def result(self, scenario: Scenario | str) -> BenchResult:
        return next(r for r in self.results if r.scenario == scenario)

    def to_dict(self) -> dict[str, Any]:
        # ``windows`` (the energy windows, for the items) stays out of the record
        return {k: plain(getattr(self, k)) for k in ("model", "runtime", "calibration", "load_s", "results", "accuracy")}


def bench_scenarios(
    model: str,
    *,
    scenarios: Sequence[Scenario | str] = (Scenario.OFFLINE,),
    runtime: str = "onnxruntime",
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    batch: int | None = None,
    duration_s: float = 10.0,
    max_duration_s: float | None = None,
    max_rerun_s: float | None = None,
    data: str | Path | None = None,
    random: int | None = None,
    dim_values: Mapping[str, int] | None = None,
    target_latency_ms: float | None = None,
    samples_per_query: int | None = None,
    log_dir: str | Path | None = None,
    accuracy: bool = False,
    seed: int = 0,
    window: Callable[[str], AbstractContextManager[Any] | None] | None = None,
    before_measuring: Callable[[], None] | None = None,
    progress: Progress = no_progress,
) -> ModelBench:
    """Calibrate ``model`` once and run each of ``scenarios`` under LoadGen (see :func:`bench_model`).

    ``window(scenario)`` may return a context manager (e.g. an EV-7 energy window) that wraps
    each performance run of that scenario; the reported run's window is in ``windows``.
    With ``accuracy`` (a zoo model with an evaluation set), an AccuracyOnly pass follows.
    ``before_measuring()`` is called once the model and its samples are ready, before the first
    timed run (``zhisuan bench`` checks there that the machine is quiet). Each scenario's result
    records the interference during its runs (:mod:`zhisuan.bench.interference`).
    """
    if not scenarios:
        raise UserError(f"no scenario given; choose from: {', '.join(SCENARIOS)}")
    scenarios = tuple(Scenario.parse(s) for s in scenarios)
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be >= 1 (or auto), got {batch}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if duration_s <= 0:
        raise UserError(f"--duration must be > 0 s, got {duration_s}")
    if target_latency_ms is not None and target_latency_ms <= 0:
        raise UserError(f"--target-latency-ms must be > 0, got {target_latency_ms}")
    from zhisuan.bench.loadgen import import_loadgen

    import_loadgen()  # a missing LoadGen is a one-line error before anything is loaded
    phases = 1 + len(scenarios) + (1 if accuracy else 0)

    def phase(k: int) -> Progress:
        def report(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
            part = min(done / total, 1.0) if done is not None and total else 0.0
            progress(text, done=k + part, total=phases)

        return report

    progress(f"loading {model} on {runtime}", done=0, total=phases)
    t0 = time.perf_counter()
    rt, zoo_name = _load(model, runtime, precision=precision, device=device, threads=threads,
                         spin=not no_spinning(runtime, device, scenarios, threads))
    load_s = time.perf_counter() - t0
    with rt:
        zdata = zoo_data(zoo_name, rt.inputs()) if zoo_name else None
        if accuracy and zdata is None:
            raise UserError(f"{model}: no evaluation set to check accuracy on (zoo models with one: "
                            f"{', '.join(_scored_models())})")
        samples = _samples(rt, zdata, data=data, random=random, seed=seed, dim_values=dim_values)
        runner = BatchRunner(rt, samples)
        if batch is not None and batch > runner.max_batch:
            raise UserError(f"--batch {batch}: this model takes at most {runner.max_batch} sample(s) per run"
                            + (f" ({runner.notes[0]})" if runner.notes else ""))
        sizes = None if batch is None else [b for b in (1, 2, 4, 8, 16, 32) if b <= batch] + [batch]
        if before_measuring is not None:
            before_measuring()
        cal = calibrate(runner, batch_sizes=sizes, progress=phase(0))
        results = []
        windows: dict[Scenario, Any] = {}
        for k, scenario in enumerate(scenarios, start=1):
            make = (lambda s=scenario: window(s) or _null()) if window is not None else None
            sampler = InterferenceSampler(gpus=gpus_of(device)).start()
            try:
                result, win = run_scenario(
                    runner, cal, scenario, model=model, min_duration_s=duration_s, batch=batch,
                    target_latency_ms=target_latency_ms, samples_per_query=samples_per_query,
                    max_duration_s=max_duration_s, max_rerun_s=max_rerun_s, log_dir=log_dir, seed=seed, window=make,
                    progress=phase(k),
                )
            finally:
                interference = sampler.stop()
            results.append(_with_interference(result, interference))
            windows[scenario] = win
        acc = None
        if accuracy and zdata is not None:
            reference = _reference_score(zdata.model, threads)
            acc = check_accuracy(
                runner, zdata, batch=cal.best.batch if batch is None else batch, reference=reference,
                reference_source=f"zoo.evaluate({zdata.model!r}) on onnxruntime, the zoo's FP32 ONNX model",
                log_dir=None if log_dir is None else Path(log_dir) / "accuracy", progress=phase(phases - 1),
            )
            results = [replace(r, accuracy=acc.to_dict()) for r in results]
        info = rt.info.to_dict()
    progress(f"{model}: done", done=phases, total=phases)
    return ModelBench(model, tuple(results), acc, info, cal.to_dict(), load_s, windows)


def _with_interference(result: BenchResult, interference: Interference) -> BenchResult:
    notes = result.notes
    if interference.disturbed:
        notes = (*notes, "measured while the machine was disturbed: " + "; ".join(interference.reasons)
                 + " (the figures measure the other jobs too)")
    return replace(result, interference=interference.to_dict(), notes=notes)


def _null() -> AbstractContextManager[None]:
    from contextlib import nullcontext

    return nullcontext()


def bench_model(
    model: str,
    *,
    scenario: Scenario | str = Scenario.OFFLINE,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    batch: int | None = None,
    duration_s: float = 10.0,
    data: str | Path | None = None,
    random: int | None = None,
    target_latency_ms: float | None = None,
    samples_per_query: int | None = None,
    log_dir: str | Path | None = None,
    accuracy: bool = False,
    seed: int = 0,
    before_measuring: Callable[[], None] | None = None,
    progress: Progress = no_progress,
) -> BenchResult:
    """Benchmark ``model`` (ONNX file or zoo name) in one LoadGen scenario, auto-calibrated.

    Samples: ``data`` (``.npz`` file or directory), else ``random`` random samples, else a zoo
    model's evaluation inputs, else 64 random samples. ``batch`` None calibrates the best
    batch size. ``log_dir`` keeps LoadGen's logs (``<scenario>-attempt<N>/mlperf_log_*``).
    """
    bench = bench_scenarios(
        model, scenarios=(scenario,), runtime=runtime, precision=precision, device=device, threads=threads,
        batch=batch, duration_s=duration_s, data=data, random=random, target_latency_ms=target_latency_ms,
        samples_per_query=samples_per_query, log_dir=log_dir, accuracy=accuracy, seed=seed,
        before_measuring=before_measuring, progress=progress,
    )
    return bench.results[0]


# ---------------------------------------------------------------------------------------------
# EV-5 suite items


def _method(r: BenchResult) -> str:
    s = r.settings
    parts = [f"MLPerf LoadGen {Scenario(r.scenario).loadgen_name} ({_loadgen_version()})",
             f"{r.runtime.get('runtime')} {r.runtime.get('provider')}, {r.threads} intra-op threads"
             + (" (not spinning when idle: they occupy every core LoadGen's threads need)"
                if (r.runtime.get("details") or {}).get("session_config", {}).get("session.intra_op.allow_spinning") == "0"
                else ""),
             f"{r.dataset.get('samples')} samples from {r.dataset.get('source')}",
             f"batch {r.batch_size}", f"min duration {s.get('min_duration_ms', 0) / 1e3:g} s",
             f"min queries {s.get('min_query_count')}"]
    if r.scenario == Scenario.SERVER:
        parts.append(f"target QPS {s.get('server_target_qps')} under a p99 bound of {r.target_latency_ms:.4g} ms")
    if r.scenario == Scenario.MULTISTREAM:
        parts.append(f"{r.samples_per_query} samples per query")
    if r.scenario == Scenario.OFFLINE:
        parts.append(f"expected QPS {s.get('offline_expected_qps')}")
    parts.append(f"result {r.result_validity} on attempt {len(r.attempts)} of {len(r.attempts)} "
                 "(settings auto-calibrated; a second attempt only after an INVALID first)")
    parts.append("not an official MLPerf result")
    return "; ".join(parts)


def _loadgen_version() -> str:
    try:
        from importlib.metadata import version

        return f"mlcommons-loadgen {version('mlcommons-loadgen')}"
    except Exception:  # not installed as a distribution (e.g. built from source)
        return "mlcommons-loadgen"


def _status(r: BenchResult) -> tuple[str, str | None]:
    if r.valid:
        return "pass", None
    last = r.attempts[-1] if r.attempts else {}
    why = last.get("invalid_reason") or last.get("early_stopping") or "see the LoadGen detail log"
    return "fail", f"LoadGen result {r.result_validity} after {len(r.attempts)} attempt(s): {why}"


def scenario_items(r: BenchResult, prefix: str) -> list[Item]:
    """EV-5 items of one scenario: throughput for all, latency percentiles where they mean latency."""
    status, reason = _status(r)
    label = f"{r.model} {Scenario(r.scenario).loadgen_name}"
    method = _method(r)
    details = {"bench": r.to_dict(), "key": r.scenario in (Scenario.OFFLINE, Scenario.SINGLESTREAM)}
    items = [Item.measured(
        f"{prefix}.samples_per_s", "EV-5", f"{label} throughput", value=r.samples_per_s, unit="samples/s",
        method=method + ("; MultiStream throughput = samples per query / mean query latency"
                         if r.scenario == Scenario.MULTISTREAM else ""),
        repeats=1, status=status, reason=reason,
        details={**details, "latency_percentiles_ms": r.latency_ms, "higher_is_better": True},
    )]
    if r.scenario != Scenario.OFFLINE and r.p99_latency_ms is not None:
        lat = r.latency_ms
        spread = {"min": lat.get("min", r.p50_latency_ms), "median": r.p50_latency_ms,
                  "max": lat.get("max", r.p99_latency_ms), "mean": lat.get("mean", r.p50_latency_ms),
                  "p90": r.p90_latency_ms, "p99": r.p99_latency_ms}
        queries = (r.attempts[-1] or {}).get("query_count") if r.attempts else None
        samples = (queries or 0) * (r.samples_per_query or 1)
        series = {"x": ["p50", "p90", "p95", "p97", "p99", "p99.9"],
                  "y": [lat.get(k) for k in ("p50", "p90", "p95", "p97", "p99", "p99.9")],
                  "x_label": "percentile", "y_label": "latency (ms)", "kind": "bar", "label": label}
        if r.scenario == Scenario.SERVER and r.target_latency_ms:
            series["hline"] = {"y": r.target_latency_ms, "label": "latency bound"}
        series["y"] = [v if v is not None else 0.0 for v in series["y"]]
        items.append(Item(
            id=f"{prefix}.p99_latency_ms", clause="EV-5", name=f"{label} p99 latency", value=r.p99_latency_ms,
            unit="ms", method=method + "; latency per sample from its scheduled issue to completion; spread = "
            "LoadGen's percentiles", repeats=samples or 1, spread=spread, status=status, reason=reason,
            details={"higher_is_better": False, "series": series, "latency_percentiles_ms": lat},
        ))
    if r.scenario == Scenario.SERVER and r.qps is not None:
        items.append(Item.measured(
            f"{prefix}.qps", "EV-5", f"{label} QPS under a {r.target_latency_ms:.4g} ms p99 bound", value=r.qps,
            unit="samples/s", method=method + "; QPS = LoadGen's scheduled samples per second", repeats=1,
            status=status, reason=reason, details={"higher_is_better": True, "target_latency_ms": r.target_latency_ms},
        ))
    return [i.under_interference(r.interference) for i in items]


def accuracy_item(acc: AccuracyResult, prefix: str) -> Item:
    method = (f"MLPerf LoadGen AccuracyOnly (Offline) over {acc.samples} evaluation samples, {acc.responses} "
              f"responses collected ({acc.accuracy_log_entries} in mlperf_log_accuracy.json), scored with the "
              f"zoo metric {acc.metric}; reference: {acc.reference_source}; fail when more than "
              f"{acc.max_drop:g} (absolute) below it")
    status = "pass" if acc.passed else "fail"
    reason = None if acc.passed else f"{acc.metric} {acc.value:.4f} is {acc.drop:.4f} below the FP32 reference {acc.reference:.4f}"
    return Item.measured(
        f"{prefix}.accuracy", "EV-5", f"{acc.model} accuracy ({acc.metric}) in the LoadGen run", value=acc.value,
        unit="fraction", method=method, repeats=1, reference=acc.reference, reference_source=acc.reference_source,
        status=status, reason=reason,
        details={"accuracy": acc.to_dict(), "higher_is_better": True, "key": True, "timed": False},
    )


def _device_for(ctx: EvalContext, runtime: str) -> str:
    kind = getattr(ctx.device, "kind", "cpu")
    if kind == "cpu":
        return "cpu"
    if kind == "cuda" and runtime == "onnxruntime":
        return f"cuda:{getattr(ctx.device, 'index', 0)}"
    raise BackendUnavailableError(f"{runtime} on {kind}", f"EV-5 runs {runtime} on cpu"
                                  + (" and cuda" if runtime == "onnxruntime" else "") + " devices only")


def _skip_items(prefix: str, model: str, reason: str) -> list[Item]:
    return [Item.skipped(f"{prefix}.{s}.samples_per_s", "EV-5", f"{model} {s.loadgen_name} throughput",
                         reason=reason, unit="samples/s") for s in SCENARIOS]


def run_model_task(ctx: EvalContext, model: str, runtime: str) -> list[Item]:
    """The four scenarios and the accuracy pass of one model on one runtime (+ EV-7 of Offline)."""
    from zhisuan.bench.energy import energy_items, energy_window

    prefix = f"EV-5.{model}" + ("" if runtime == "onnxruntime" else f".{runtime}")
    try:
        device = _device_for(ctx, runtime)
    except BackendUnavailableError as exc:
        return _skip_items(prefix, model, str(exc))
    duration = ctx.pick(quick=2.0, standard=10.0, full=60.0)
    cap = ctx.pick(quick=8.0, standard=60.0, full=None)
    rerun_cap = ctx.pick(quick=30.0, standard=180.0, full=None)

    def window(scenario: str) -> AbstractContextManager[Any] | None:
        return energy_window(ctx) if scenario == Scenario.OFFLINE else None

    try:
        bench = bench_scenarios(
            model, scenarios=SCENARIOS, runtime=runtime, device=device, threads=ctx.threads, duration_s=duration,
            max_duration_s=cap, max_rerun_s=rerun_cap, log_dir=Path(ctx.work_dir) / f"loadgen-{model}-{runtime}", accuracy=True,
            seed=ctx.seed, window=window, progress=ctx.progress,
        )
    except BackendUnavailableError as exc:
        return _skip_items(prefix, model, str(exc))
    items: list[Item] = []
    for r in bench.results:
        items.extend(scenario_items(r, f"{prefix}.{r.scenario}"))
    if bench.accuracy is not None:
        items.append(accuracy_item(bench.accuracy, prefix))
    offline = bench.result(Scenario.OFFLINE)
    win = bench.windows.get(Scenario.OFFLINE)
    reading = getattr(win, "reading", None)
    if reading is not None:
        energy_prefix = f"EV-7.inference.{model}" + ("" if runtime == "onnxruntime" else f".{runtime}")
        perf = offline.samples_per_s if offline.valid else None
        items.extend(energy_items(energy_prefix, perf, "samples/s", reading))
    return items


def model_task_id(model: str, runtime: str) -> str:
    return f"EV-5.{model}" + ("" if runtime == "onnxruntime" else f".{runtime}")


def _register(model: str, runtime: str, suites: Sequence[str], est: Mapping[str, float]) -> None:
    kinds = ("cpu", "cuda") if runtime == "onnxruntime" else ("cpu",)

    def measure(ctx: EvalContext) -> list[Item]:
        return run_model_task(ctx, model, runtime)

    measure.__doc__ = f"LoadGen scenarios and accuracy of {model} on {runtime} (+ EV-7 energy of Offline)"
    task(model_task_id(model, runtime), clause="EV-5", suites=suites, est_s=dict(est), device_kinds=kinds)(measure)


@task_provider
def register_zoo_tasks() -> None:
    """One EV-5 task per ``suite_runs`` entry of every zoo model (each model's own file says where
    it is benchmarked, so a new model needs no edit here)."""
    from zhisuan import zoo
    from zhisuan.bench.tasks import forget, registered_ids

    wanted = {model_task_id(e.name, r.runtime): (e.name, r) for e in zoo.entries() for r in e.suite_runs}
    for gone in _ZOO_TASKS - wanted.keys():  # an entry removed with zoo.unregister
        forget(gone)
        _ZOO_TASKS.discard(gone)
    known = registered_ids()
    for task_id, (name, run) in wanted.items():
        if task_id not in known:
            _register(name, run.runtime, run.suites, run.est_s)
            _ZOO_TASKS.add(task_id)


#: The EV-5 tasks :func:`register_zoo_tasks` made.
_ZOO_TASKS: set[str] = set()




# ---------------------------------------------------------------------------------------------
# LLM token metrics


def _latency_item(item_id: str, name: str, stats: Mapping[str, float | int], method: str,
                  series: dict[str, Any] | None = None) -> Item:
    if not stats.get("count"):
        return Item.skipped(item_id, "EV-5", name, reason="no values (every request produced one token)", unit="ms")
    spread = {k: float(stats[k]) for k in ("min", "mean", "p90", "p99", "max")}
    spread["median"] = float(stats["p50"])
    details: dict[str, Any] = {"higher_is_better": False, "stats_ms": dict(stats)}
    if series:
        details["series"] = series
    return Item(id=item_id, clause="EV-5", name=name, value=float(stats["p50"]), unit="ms",
                method=method + "; value = p50, spread = min/median/mean/p90/p99/max",
                repeats=int(stats["count"]), spread=spread, status="pass", details=details)


def llm_items(metrics: Any, prefix: str, label: str, method: str) -> list[Item]:
    """EV-5 token-metric items of one :class:`~zhisuan.bench.llm.TokenMetrics`."""
    m = metrics
    per_request = list(m.per_request)
    series = {"x": list(range(1, len(per_request) + 1)), "y": [r["ttft_ms"] for r in per_request],
              "x_label": "request", "y_label": "TTFT (ms)", "kind": "bar", "label": "TTFT"}
    defs = m.definitions
    items = [
        _latency_item(f"{prefix}.ttft_ms", f"{label} time to first token", m.ttft_ms, f"{method}; TTFT = {defs['ttft']}",
                      series),
        _latency_item(f"{prefix}.tpot_ms", f"{label} time per output token", m.tpot_ms, f"{method}; TPOT = {defs['tpot']}"),
        _latency_item(f"{prefix}.itl_ms", f"{label} inter-token latency", m.itl_ms, f"{method}; ITL = {defs['itl']}"),
        _latency_item(f"{prefix}.e2e_latency_ms", f"{label} end-to-end request latency", m.e2e_latency_ms,
                      f"{method}; E2E = {defs['e2e_latency']}"),
        Item.measured(f"{prefix}.output_tokens_per_s", "EV-5", f"{label} output tokens/s", value=m.output_tokens_per_s,
                      unit="tokens/s", method=f"{method}; {defs['output_tokens_per_s']} ({m.output_tokens} tokens in "
                      f"{m.wall_s:.3f} s)", repeats=1,
                      details={"higher_is_better": True, "request_tokens_per_s": m.request_tokens_per_s,
                               "requests_per_s": m.requests_per_s, "key": True}),
    ]
    return items


def run_llm_task(ctx: EvalContext) -> list[Item]:
    """Token metrics of gpt2-small: sequential and concurrent streams, and a LoadGen run with token latencies."""
    from zhisuan import zoo
    from zhisuan.bench.llm import loadgen_token_run, measure_requests
    from zhisuan.runtime import load_runtime
    from zhisuan.zoo.data.text_render import token_prompts

    name = "gpt2-small"
    prefix = f"EV-5.{name}"
    try:
        device = _device_for(ctx, "onnxruntime")
    except BackendUnavailableError as exc:
        return [Item.skipped(f"{prefix}.ttft_ms", "EV-5", f"{name} time to first token", reason=str(exc), unit="ms")]
    requests = ctx.pick(quick=4, standard=8, full=16)
    prompt_len = ctx.pick(quick=16, standard=32, full=64)
    new_tokens = ctx.pick(quick=8, standard=32, full=64)
    concurrencies = ctx.pick(quick=(1, 2), standard=(1, 2, 4), full=(1, 2, 4))
    # Offline LoadGen reports tokens/s only; SingleStream also TTFT/TPOT percentiles but needs 64 requests
    lg_scenario = ctx.pick(quick=Scenario.OFFLINE, standard=Scenario.SINGLESTREAM, full=Scenario.SINGLESTREAM)
    lg_duration = ctx.pick(quick=2.0, standard=10.0, full=60.0)
    total_steps = len(concurrencies) + 2
    ctx.progress(f"{name}: loading", done=0, total=total_steps)
    path = zoo.model_path(name)
    prompts = token_prompts(requests, prompt_len, seed=ctx.seed, vocab_size=zoo.get(name).metadata["vocab_size"])
    items: list[Item] = []
    with load_runtime(path, "onnxruntime", device=device, intra_op_threads=ctx.threads) as rt:
        info = rt.info
        from zhisuan.bench.llm import KvDecoder

        KvDecoder(rt).stream(prompts[0], 2)  # warm-up: first-run allocations are not a request's latency
        base = (f"{requests} greedy requests of {prompt_len} prompt + {new_tokens} new tokens (seeded prompts), "
                f"KV-cache decoding, one token per streamed chunk, on {info.runtime} {info.provider} with "
                f"{info.intra_op_threads} intra-op threads")
        median_request_s = None
        for k, concurrency in enumerate(concurrencies, start=1):
            ctx.progress(f"{name}: {requests} requests at concurrency {concurrency}", done=k, total=total_steps)
            metrics, _ = measure_requests(rt, prompts, new_tokens, concurrency=concurrency)
            sub = prefix if concurrency == 1 else f"{prefix}.concurrency{concurrency}"
            label = name if concurrency == 1 else f"{name} (concurrency {concurrency})"
            items.extend(llm_items(metrics, sub, label, f"{base}; {concurrency} closed-loop client thread(s)"))
            if concurrency == 1:
                median_request_s = float(metrics.e2e_latency_ms["p50"]) / 1e3
        assert median_request_s is not None
        ctx.progress(f"{name}: LoadGen {lg_scenario} with token latencies", done=total_steps - 1, total=total_steps)
        lg = loadgen_token_run(rt, list(prompts), new_tokens, request_s=median_request_s, scenario=lg_scenario,
                               min_duration_s=lg_duration, log_dir=Path(ctx.work_dir) / f"loadgen-{name}",
                               seed=ctx.seed)
    items.extend(_llm_loadgen_items(lg, f"{prefix}.loadgen.{lg_scenario}", name, base))
    ctx.progress(f"{name}: done", done=total_steps, total=total_steps)
    return items


def _llm_loadgen_items(lg: Any, prefix: str, name: str, base: str) -> list[Item]:
    status, reason = ("pass", None) if lg.valid else (
        "fail", f"LoadGen result {lg.result_validity}: {(lg.attempts[-1] or {}).get('invalid_reason')}")
    method = (f"MLPerf LoadGen {Scenario(lg.scenario).loadgen_name} with use_token_latencies ({_loadgen_version()}): the SUT "
              f"calls FirstTokenComplete after the prefill and QuerySamplesComplete with the token count; {base}; "
              f"result {lg.result_validity} after {len(lg.attempts)} attempt(s); not an official MLPerf result")
    items = [Item.measured(f"{prefix}.tokens_per_s", "EV-5", f"{name} tokens/s (LoadGen {lg.scenario})",
                           value=lg.tokens_per_s, unit="tokens/s", method=method, repeats=1, status=status,
                           reason=reason, details={"loadgen": lg.to_dict(), "higher_is_better": True})]
    for key, stats, label in (("ttft_ms", lg.ttft_ms, "time to first token"),
                              ("tpot_ms", lg.tpot_ms, "time per output token")):
        if "p50" not in stats:
            continue
        spread = {"min": stats.get("min", stats["p50"]), "median": stats["p50"], "max": stats.get("max", stats["p99"]),
                  "mean": stats.get("mean", stats["p50"]), "p90": stats.get("p90"), "p99": stats.get("p99")}
        queue_note = ("; Offline issues every request at once, so TTFT includes the wait for earlier requests"
                      if lg.scenario == Scenario.OFFLINE and key == "ttft_ms" else "")
        items.append(Item(
            id=f"{prefix}.{key}", clause="EV-5", name=f"{name} {label} (LoadGen {lg.scenario})", value=stats["p50"],
            unit="ms", method=method + f"; value = LoadGen's p50, spread = its percentiles{queue_note}",
            repeats=int(lg.query_count or 1) if lg.scenario != Scenario.OFFLINE else int(lg.settings.get("effective", {})
                                                                                    .get("samples_per_query", 1)),
            spread={k: float(v) for k, v in spread.items() if v is not None and math.isfinite(float(v))},
            status=status, reason=reason, details={"higher_is_better": False},
        ))
    return items


task("EV-5.gpt2-small", clause="EV-5", suites=("quick", "standard", "full"),
     est_s={"quick": 40, "standard": 150, "full": 600}, device_kinds=("cpu", "cuda"))(run_llm_task)
