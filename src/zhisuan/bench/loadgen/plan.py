"""Scenario settings: LoadGen's TestSettings, and the test plan that makes a run VALID the first time.

:func:`plan_scenario` (pure: no LoadGen, no timing) turns a
:class:`~zhisuan.bench.loadgen.calibration.Calibration` into expected latency / QPS, samples per
query, the Server QPS under its latency bound, and query counts large enough for LoadGen's
early-stopping rule. :func:`adjust_plan` corrects a plan once from LoadGen's own numbers after an
INVALID run.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from zhisuan.bench.loadgen.mllog import LoadGenSummary, _queries_needed
from zhisuan.errors import UsageError, UserError
from zhisuan.results import Record

if TYPE_CHECKING:  # the calibration runs a LoadGen probe with a plan, so it imports this module
    from zhisuan.bench.loadgen.calibration import Calibration

__all__ = [
    "EARLY_STOPPING_MIN_QUERIES",
    "EXPECTED_LATENCY_FRACTION",
    "MULTISTREAM_SAMPLES_PER_QUERY",
    "OFFLINE_QPS_MARGIN",
    "SCENARIOS",
    "SERVER_BOUND_FACTOR",
    "SERVER_MIN_BOUND_MS",
    "SERVER_MIN_QUERIES",
    "SERVER_RERUN_P99_FRACTION",
    "SERVER_RERUN_QUERY_FACTOR",
    "SERVER_UTILIZATION",
    "SINGLESTREAM_MIN_QUERIES",
    "LoadGenSettings",
    "Scenario",
    "ScenarioPlan",
    "adjust_plan",
    "plan_scenario",
]



class Scenario(enum.StrEnum):
    """The four MLPerf LoadGen scenarios, by zhisuan's lower-case names."""

    SINGLESTREAM = "singlestream"
    MULTISTREAM = "multistream"
    SERVER = "server"
    OFFLINE = "offline"

    @classmethod
    def parse(cls, value: str) -> Scenario:
        """``value`` (any case: ``Offline`` is LoadGen's spelling) as a scenario; anything else is a
        :class:`UserError` naming the four."""
        try:
            return cls(str(value).lower())
        except ValueError:
            raise UsageError(f"unknown scenario {value!r}; choose one of: {', '.join(cls)}") from None

    @property
    def loadgen_name(self) -> str:
        """LoadGen's name (``TestScenario`` member, log entries): ``SingleStream``, ``Offline``..."""
        return _LG_SCENARIO[self]


SCENARIOS: tuple[Scenario, ...] = tuple(Scenario)
_LG_SCENARIO = {Scenario.SINGLESTREAM: "SingleStream", Scenario.MULTISTREAM: "MultiStream",
                Scenario.SERVER: "Server", Scenario.OFFLINE: "Offline"}
_LG_MODE = {"performance": "PerformanceOnly", "accuracy": "AccuracyOnly"}

#: Queries LoadGen 6.0's early-stopping rule needs before it can call a run VALID when no query
#: is over its latency bound, read from LoadGen's own messages ("Need to process at least 64
#: queries", "at least 662", "Would need to run at least 359 more queries" after 100).
EARLY_STOPPING_MIN_QUERIES: dict[str, int] = {"singlestream": 64, "multistream": 662, "server": 459}
#: Server runs ask for this many queries: the early-stopping minimum plus room for a few
#: queries over the bound.
SERVER_MIN_QUERIES = 600
#: A Server rerun after latency over the bound asks for this many times the queries.
SERVER_RERUN_QUERY_FACTOR = 2
#: ... and aims its p99 at this fraction of the bound (QPS x fraction x bound / measured p99): the
#: rerun is the last, and a p99 just under the bound still leaves ~1 % of queries near it, which
#: early stopping counts against the run.
SERVER_RERUN_P99_FRACTION = 0.6
#: SingleStream runs ask for LoadGen's default minimum query count (above the 64 it needs).
SINGLESTREAM_MIN_QUERIES = 100
#: LoadGen's default (and MLPerf's) samples per MultiStream query.
MULTISTREAM_SAMPLES_PER_QUERY = 8
#: The Server scenario is asked for this fraction of the calibrated throughput. With Poisson
#: arrivals the p99 latency grows fast with load: measured here (efficientnet-lite0, 2 threads),
#: p99 was ~18x the batch-1 p50 at 0.7 of capacity and ~5x at 0.5.
SERVER_UTILIZATION = 0.6
#: Without a user bound, the Server latency bound is this multiple of the batch-1 p90 latency.
SERVER_BOUND_FACTOR = 10.0
#: The default Server latency bound is never below this: Python and LoadGen threads add jitter
#: of a few hundred microseconds that a sub-millisecond bound would count against the model.
SERVER_MIN_BOUND_MS = 5.0
#: Offline asks for this multiple of the fastest calibrated throughput, so a real run faster
#: than the calibration (warmer caches, a quieter machine) still lasts the minimum duration:
#: LoadGen sizes the one Offline query from it, and a run that ends early is INVALID.
OFFLINE_QPS_MARGIN = 1.5
#: Expected latencies are set to this fraction of the measured one: LoadGen pre-generates
#: queries for twice the duration at the expected rate, so too low is harmless, too high INVALID.
EXPECTED_LATENCY_FRACTION = 0.5


@dataclass(frozen=True)
class LoadGenSettings(Record):
    """The ``mlperf_loadgen.TestSettings`` fields zhisuan sets; everything else is LoadGen's default."""

    scenario: Scenario  # a scenario name is parsed
    mode: str = "performance"
    min_duration_ms: int = 10_000
    min_query_count: int = 1
    single_stream_expected_latency_ns: int | None = None
    multi_stream_expected_latency_ns: int | None = None
    multi_stream_samples_per_query: int | None = None
    server_target_qps: float | None = None
    server_target_latency_ns: int | None = None
    server_target_latency_percentile: float | None = None
    offline_expected_qps: float | None = None
    use_token_latencies: bool = False
    ttft_latency_ns: int | None = None
    tpot_latency_ns: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scenario", Scenario.parse(self.scenario))
        if self.mode not in _LG_MODE:
            raise UserError(f"unknown LoadGen mode {self.mode!r}; choose one of: {', '.join(_LG_MODE)}")

    def test_settings(self, lg: Any) -> Any:
        """The ``mlperf_loadgen.TestSettings`` object for these settings."""
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, self.scenario.loadgen_name)
        ts.mode = getattr(lg.TestMode, _LG_MODE[self.mode])
        ts.min_duration_ms = int(self.min_duration_ms)
        ts.min_query_count = int(self.min_query_count)
        fields = ("single_stream_expected_latency_ns", "multi_stream_expected_latency_ns",
                  "multi_stream_samples_per_query", "server_target_qps", "server_target_latency_ns",
                  "server_target_latency_percentile", "offline_expected_qps")
        for name in fields:
            value = getattr(self, name)
            if value is not None:
                setattr(ts, name, value)
        if self.use_token_latencies:
            ts.use_token_latencies = True
            if self.ttft_latency_ns is not None:
                ts.ttft_latency = int(self.ttft_latency_ns)
            if self.tpot_latency_ns is not None:
                ts.tpot_latency = int(self.tpot_latency_ns)
        ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(self.seed)
        return ts

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}


@dataclass(frozen=True)
class ScenarioPlan(Record):
    """LoadGen settings plus how the SUT batches, and why (``notes``)."""

    settings: LoadGenSettings
    batch: int  # Offline / Server: samples per batch at most; MultiStream: samples per chunk of a query
    max_delay_ms: float = 0.0  # Server: how long a worker waits to fill a batch
    expected_duration_s: float = 0.0
    notes: tuple[str, ...] = ()


def _ms_to_ns(ms: float) -> int:
    return max(1, round(ms * 1e6))


def _query_plan(cal: Calibration, spq: int, max_batch: int) -> tuple[int, float, float]:
    """The fastest chunk size for a query of ``spq`` samples, and that query's p50 and fastest latency (ms)."""
    best: tuple[int, float, float] | None = None
    for t in cal.timings:
        if t.batch > min(spq, max_batch):
            continue
        chunks = math.ceil(spq / t.batch)
        if best is None or chunks * t.p50_ms < best[1]:
            best = (t.batch, chunks * t.p50_ms, chunks * t.min_ms)
    assert best is not None  # batch 1 is always timed
    return best


def plan_scenario(
    cal: Calibration,
    scenario: Scenario | str,
    *,
    min_duration_s: float,
    batch: int | None = None,
    target_latency_ms: float | None = None,
    samples_per_query: int | None = None,
    max_duration_s: float | None = None,
    seed: int = 0,
) -> ScenarioPlan:
    """LoadGen settings for ``scenario`` from measured batch timings, so that the run is VALID.

    - SingleStream: expected latency = half the fastest batch-1 run (LoadGen pre-generates
      queries for twice the duration at that rate; fewer than needed makes the run INVALID), at
      least :data:`SINGLESTREAM_MIN_QUERIES` queries.
    - MultiStream: ``samples_per_query`` (default 8) samples per query, run in the chunk size
      that is fastest for it; 662 queries (LoadGen's early stopping for the 99th percentile).
      When ``max_duration_s`` is given and 662 queries would not fit, samples per query are
      halved until they do (recorded in ``notes``).
    - Server: the latency bound is ``target_latency_ms``, else 10x (batch-1 p90 + the measured
      hand-over to a worker thread), at least 5 ms; the batch is the highest-throughput size
      whose p90 fits a quarter of the bound; target QPS is 60% of the rate a worker sustains at
      that size; at least :data:`SERVER_MIN_QUERIES` queries.
    - Offline: one query sized for 1.5x the throughput of the fastest calibrated run at the best
      (or the given) batch size, so that a run faster than typical still lasts the minimum
      duration; run in batches of that size.

    ``batch`` forces the batch size (else the calibrated best). Pure: no LoadGen, no timing.
    """
    scenario = Scenario.parse(scenario)
    if min_duration_s <= 0:
        raise UserError(f"the minimum duration must be > 0 s, got {min_duration_s}")
    one = cal.timings[0]
    max_batch = batch if batch is not None else max(t.batch for t in cal.timings)
    duration_ms = round(min_duration_s * 1e3)
    notes: list[str] = []
    if scenario == Scenario.SINGLESTREAM:
        expected = EXPECTED_LATENCY_FRACTION * one.min_ms
        settings = LoadGenSettings("singlestream", min_duration_ms=duration_ms,
                                   min_query_count=SINGLESTREAM_MIN_QUERIES,
                                   single_stream_expected_latency_ns=_ms_to_ns(expected), seed=seed)
        run_s = max(min_duration_s, SINGLESTREAM_MIN_QUERIES * one.p50_ms / 1e3)
        return ScenarioPlan(settings, 1, 0.0, run_s, (f"expected latency {expected:.3g} ms = "
                                                       f"{EXPECTED_LATENCY_FRACTION:g} x fastest batch-1 run "
                                                       f"{one.min_ms:.3g} ms",))
    if scenario == Scenario.MULTISTREAM:
        spq = samples_per_query or MULTISTREAM_SAMPLES_PER_QUERY
        if spq < 1:
            raise UserError(f"samples per query must be >= 1, got {spq}")
        queries = EARLY_STOPPING_MIN_QUERIES["multistream"]
        chunk, latency, fastest = _query_plan(cal, spq, max_batch)
        if max_duration_s is not None and samples_per_query is None:
            while spq > 1 and queries * latency / 1e3 > max_duration_s:
                spq //= 2
                chunk, latency, fastest = _query_plan(cal, spq, max_batch)
            if spq != (samples_per_query or MULTISTREAM_SAMPLES_PER_QUERY):
                notes.append(f"samples per query lowered from {MULTISTREAM_SAMPLES_PER_QUERY} to {spq} so the "
                             f"{queries} queries LoadGen's early stopping needs fit in {max_duration_s:g} s")
        expected = EXPECTED_LATENCY_FRACTION * fastest
        settings = LoadGenSettings("multistream", min_duration_ms=duration_ms, min_query_count=queries,
                                   multi_stream_expected_latency_ns=_ms_to_ns(expected),
                                   multi_stream_samples_per_query=spq, seed=seed)
        notes.append(f"{spq} samples per query in chunks of {chunk}: {latency:.3g} ms per query measured; "
                     f"expected latency {expected:.3g} ms; {queries} queries for early stopping")
        return ScenarioPlan(settings, chunk, 0.0, max(min_duration_s, queries * latency / 1e3), tuple(notes))
    if scenario == Scenario.SERVER:
        if target_latency_ms is not None:
            bound = target_latency_ms
        else:
            bound = max(SERVER_BOUND_FACTOR * (one.p90_ms + cal.dispatch_ms), SERVER_MIN_BOUND_MS)
            notes.append(f"latency bound {bound:.3g} ms = max({SERVER_BOUND_FACTOR:g} x (batch-1 p90 {one.p90_ms:.3g} ms"
                         f" + hand-over {cal.dispatch_ms:.3g} ms), {SERVER_MIN_BOUND_MS:g} ms); "
                         "give --target-latency-ms to set it")
        if bound <= 0:
            raise UserError(f"the target latency must be > 0 ms, got {bound}")
        fitting = [t for t in cal.timings if t.batch <= max_batch and t.p90_ms + cal.dispatch_ms <= bound / 4] or [one]
        chosen = max(fitting, key=cal.server_rate)
        rate = cal.server_rate(chosen)
        qps = SERVER_UTILIZATION * rate
        delay = 0.05 * bound if chosen.batch > 1 else 0.0
        settings = LoadGenSettings("server", min_duration_ms=duration_ms, min_query_count=SERVER_MIN_QUERIES,
                                   server_target_qps=round(qps, 4), server_target_latency_ns=_ms_to_ns(bound),
                                   server_target_latency_percentile=0.99, seed=seed)
        notes.append(f"target QPS {qps:.4g} = {SERVER_UTILIZATION:g} x {rate:.4g} samples/s at batch "
                     f"{chosen.batch} (p50 {chosen.p50_ms:.3g} ms + hand-over {cal.dispatch_ms:.3g} ms; "
                     f"p90 fits a quarter of the bound)")
        run_s = max(min_duration_s, SERVER_MIN_QUERIES / qps)
        return ScenarioPlan(settings, chosen.batch, delay, run_s, tuple(notes))
    timing = cal.timing(batch) if batch is not None else cal.best
    if timing is None:
        raise UserError(f"batch size {batch} was not calibrated")
    if cal.sut_limited and cal.probe_samples_per_s:
        rate, typical = cal.probe_samples_per_s, cal.probe_samples_per_s
        notes.append(f"LoadGen and the SUT limit this model: the probe reached {rate:.4g} samples/s, the model alone "
                     f"{timing.samples_per_s:.4g}")
        basis = "the LoadGen probe"
    else:
        rate, typical = timing.peak_samples_per_s, timing.samples_per_s
        basis = f"the fastest calibrated run at batch {timing.batch} (typical: {typical:.4g})"
    qps = OFFLINE_QPS_MARGIN * rate
    settings = LoadGenSettings("offline", min_duration_ms=duration_ms, min_query_count=1,
                               offline_expected_qps=round(qps, 4), seed=seed)
    notes.append(f"expected QPS {qps:.4g} = {OFFLINE_QPS_MARGIN:g} x {rate:.4g} samples/s, {basis}")
    run_s = min_duration_s * OFFLINE_QPS_MARGIN * 1.1 * rate / typical
    return ScenarioPlan(settings, timing.batch, 0.0, run_s, tuple(notes))


def adjust_plan(plan: ScenarioPlan, summary: LoadGenSummary) -> ScenarioPlan | None:
    """New settings from LoadGen's own numbers after an INVALID run; None when nothing can help.

    Min duration not met: the expected latency / QPS is re-derived from the latency or throughput
    LoadGen measured. Early stopping not met: the query count LoadGen says it needs (+10%).
    Server latency over its bound: QPS scaled by 0.6 x bound / measured p99, and twice the queries
    (early stopping then tolerates a few queries over the bound).
    """
    if summary.valid:
        return None
    s = plan.settings
    changes: dict[str, Any] = {}
    notes: list[str] = []
    lat = summary.latency_ns
    over_bound = s.scenario == Scenario.SERVER and summary.perf_constraints_met is False
    if over_bound and s.server_target_qps and lat.get("p99"):
        bound = float(s.server_target_latency_ns or 0)
        completed = summary.completed_samples_per_s or 0.0
        scheduled = summary.scheduled_samples_per_s or s.server_target_qps
        if 0 < completed < 0.95 * scheduled:  # overloaded: the SUT completed less than was asked
            qps = SERVER_UTILIZATION * completed
            why = f"the SUT completed {completed:.4g} of {scheduled:.4g} samples/s asked"
        else:
            qps = s.server_target_qps * min(0.9, max(0.3, SERVER_RERUN_P99_FRACTION * bound / lat["p99"]))
            why = f"p99 {lat['p99'] / 1e6:.3g} ms over the {bound / 1e6:.3g} ms bound"
        changes["server_target_qps"] = round(max(qps, 1e-3), 4)
        notes.append(f"{why}: target QPS {s.server_target_qps:g} -> {changes['server_target_qps']:g}")
        # The rerun is the last: at the lower QPS a loaded machine still sends a few queries over the
        # bound, and early stopping fails 600 queries for a single one (it needs 662). Twice the
        # queries tolerate about four.
        changes["min_query_count"] = max(s.min_query_count, SERVER_RERUN_QUERY_FACTOR * s.min_query_count)
        notes.append(f"min query count -> {changes['min_query_count']} so a few outliers do not void the rerun")
    if summary.min_duration_met is False:
        if s.scenario == Scenario.OFFLINE and summary.samples_per_s:
            changes["offline_expected_qps"] = round(1.3 * summary.samples_per_s, 4)
        elif s.scenario == Scenario.SINGLESTREAM and lat.get("mean"):
            changes["single_stream_expected_latency_ns"] = max(1, int(EXPECTED_LATENCY_FRACTION * lat["mean"]))
        elif s.scenario == Scenario.MULTISTREAM and summary.query_latency_ns.get("mean"):
            changes["multi_stream_expected_latency_ns"] = max(1, int(EXPECTED_LATENCY_FRACTION
                                                                      * summary.query_latency_ns["mean"]))
        elif s.scenario == Scenario.SERVER and s.server_target_qps and "server_target_qps" not in changes:
            changes["min_query_count"] = max(s.min_query_count, int(1.2 * s.server_target_qps * s.min_duration_ms / 1e3))
        if changes:
            notes.append("minimum duration not met: expected latency/QPS re-derived from LoadGen's measurement")
    if summary.early_stopping_met is False and not over_bound:  # with latency over the bound, more queries do not help
        needed = _queries_needed(summary.early_stopping_result, summary.query_count)
        if needed is not None:
            changes["min_query_count"] = max(s.min_query_count, math.ceil(1.1 * needed))
            notes.append(f"early stopping needs {needed} queries: min query count -> {changes['min_query_count']}")
    if not changes:
        return None
    settings = replace(s, **changes)
    expected = plan.expected_duration_s
    if settings.scenario == Scenario.SERVER and settings.server_target_qps:
        expected = max(settings.min_duration_ms / 1e3, settings.min_query_count / settings.server_target_qps)
    elif settings.scenario == Scenario.OFFLINE and settings.offline_expected_qps and summary.samples_per_s:
        expected = 1.1 * settings.min_duration_ms / 1e3 * settings.offline_expected_qps / summary.samples_per_s
    elif (settings.scenario in (Scenario.SINGLESTREAM, Scenario.MULTISTREAM) and summary.query_count
          and plan.expected_duration_s):
        expected = plan.expected_duration_s * max(1.0, settings.min_query_count / summary.query_count)
    return replace(plan, settings=settings, expected_duration_s=expected, notes=(*plan.notes, *notes))
