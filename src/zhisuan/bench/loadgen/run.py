"""The driver: one scenario planned from a calibration, run, rerun once if INVALID, and its BenchResult.

:func:`run_scenario` plans with :func:`~zhisuan.bench.loadgen.plan.plan_scenario`, runs LoadGen
with :func:`~zhisuan.bench.loadgen.sut.run_loadgen`, corrects the plan once with
:func:`~zhisuan.bench.loadgen.plan.adjust_plan` when LoadGen says INVALID, and builds the
:class:`BenchResult` from the last run, recording both attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhisuan.bench.loadgen.calibration import Calibration
from zhisuan.bench.loadgen.plan import Scenario, adjust_plan, plan_scenario
from zhisuan.bench.loadgen.sut import BatchRunner, LoadGenRun, run_loadgen
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

__all__ = ["OFFICIAL_NOTE", "BenchResult", "run_scenario"]

OFFICIAL_NOTE = (
    "not an official MLPerf result: minimum duration {duration:g} s (MLPerf rules: 600 s), "
    "settings calibrated by zhisuan, no audit, samples held in memory"
)


@dataclass(frozen=True)
class BenchResult(Record):
    """One LoadGen scenario on one model: the figures, the settings behind them and how they were chosen.

    ``samples_per_s`` is the scenario's throughput (see
    :class:`~zhisuan.bench.loadgen.mllog.LoadGenSummary`); latencies are per sample as LoadGen
    measured them (from the query's scheduled time to its completion).
    ``attempts`` holds every run (the second only when the first was INVALID). ``interference``
    is filled by :func:`zhisuan.bench.inference.bench_scenarios` (None when run directly).
    """

    model: str
    scenario: Scenario
    valid: bool
    result_validity: str | None
    samples_per_s: float | None
    p50_latency_ms: float | None
    p90_latency_ms: float | None
    p99_latency_ms: float | None
    latency_ms: dict[str, float]
    qps: float | None
    target_latency_ms: float | None
    query_latency_ms: dict[str, float]
    samples_per_query: int | None
    batch_size: int
    early_stopping: str | None
    runtime: dict[str, Any]
    threads: int | None
    dataset: dict[str, Any]
    settings: dict[str, Any]
    calibration: dict[str, Any]
    attempts: tuple[dict[str, Any], ...]
    log_dir: str | None
    duration_s: float
    notes: tuple[str, ...] = ()
    official: bool = False
    accuracy: dict[str, Any] | None = None
    #: what other jobs took of the machine during the runs (:class:`zhisuan.bench.interference.Interference`)
    interference: dict[str, Any] | None = None


def run_scenario(
    runner: BatchRunner,
    calibration: Calibration,
    scenario: Scenario | str,
    *,
    model: str,
    min_duration_s: float,
    batch: int | None = None,
    target_latency_ms: float | None = None,
    samples_per_query: int | None = None,
    max_duration_s: float | None = None,
    max_rerun_s: float | None = None,
    log_dir: str | Path | None = None,
    seed: int = 0,
    window: Callable[[], AbstractContextManager[Any]] | None = None,
    progress: Progress = no_progress,
) -> tuple[BenchResult, Any]:
    """Plan ``scenario`` from ``calibration``, run it, and rerun once with adjusted settings if INVALID.

    The rerun is skipped (and the result stays INVALID, saying why) when its settings would make
    it last longer than ``max_rerun_s``. ``window`` (e.g. ``lambda: energy_window(ctx)``) wraps
    each performance run; the window of the reported run is returned with the result.
    """
    start = time.perf_counter()
    scenario = Scenario.parse(scenario)
    plan = plan_scenario(calibration, scenario, min_duration_s=min_duration_s, batch=batch,
                         target_latency_ms=target_latency_ms, samples_per_query=samples_per_query,
                         max_duration_s=max_duration_s, seed=seed)
    runs: list[LoadGenRun] = []
    windows: list[Any] = []
    skipped_rerun: str | None = None
    for attempt in (1, 2):
        sub = None if log_dir is None else Path(log_dir) / f"{scenario}-attempt{attempt}"
        with (window() if window is not None else nullcontext()) as win:
            run = run_loadgen(runner, plan, log_dir=sub, progress=progress,
                              label=f"{model}: {scenario}" + (" (rerun)" if attempt == 2 else ""))
        runs.append(run)
        windows.append(win)
        if run.sut_errors:
            raise UserError(f"{model}: the model failed during the {scenario} run: {run.sut_errors[0]}")
        if run.summary.valid or attempt == 2:
            break
        adjusted = adjust_plan(plan, run.summary)
        if adjusted is None:
            break
        if max_rerun_s is not None and adjusted.expected_duration_s > max_rerun_s:
            skipped_rerun = (f"no rerun: the corrected settings ({adjusted.notes[-1]}) would run "
                             f"~{adjusted.expected_duration_s:.0f} s, over the {max_rerun_s:g} s allowed")
            break
        plan = adjusted
    final = runs[-1]
    s = final.summary
    lat = {k: v / 1e6 for k, v in s.latency_ns.items()}
    bound = plan.settings.server_target_latency_ns
    result = BenchResult(
        model=model,
        scenario=scenario,
        valid=s.valid,
        result_validity=s.validity,
        samples_per_s=s.samples_per_s,
        p50_latency_ms=lat.get("p50"),
        p90_latency_ms=lat.get("p90"),
        p99_latency_ms=lat.get("p99"),
        latency_ms=lat,
        qps=s.scheduled_samples_per_s if scenario == Scenario.SERVER else None,
        target_latency_ms=bound / 1e6 if scenario == Scenario.SERVER and bound else None,
        query_latency_ms={k: v / 1e6 for k, v in s.query_latency_ns.items()},
        samples_per_query=plan.settings.multi_stream_samples_per_query if scenario == Scenario.MULTISTREAM else None,
        batch_size=plan.batch,
        early_stopping=s.early_stopping_result or None,
        runtime=dict(runner.runtime.info.to_dict()) if hasattr(runner.runtime, "info") else {},
        threads=getattr(getattr(runner.runtime, "info", None), "intra_op_threads", None),
        dataset=runner.samples.describe(),
        settings={**plan.settings.to_dict(), "effective": s.effective},
        calibration=calibration.to_dict(),
        attempts=tuple(r.to_dict() for r in runs),
        log_dir=str(Path(log_dir)) if log_dir is not None else None,
        duration_s=time.perf_counter() - start,
        notes=(*plan.notes, *runner.notes, *([skipped_rerun] if skipped_rerun else []),
               OFFICIAL_NOTE.format(duration=min_duration_s)),
    )
    return result, windows[-1]
