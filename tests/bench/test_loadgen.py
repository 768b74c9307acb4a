"""The LoadGen driver: real runs of a tiny model in every scenario, the pure planner, the log parser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from loadgen_helpers import mlp_onnx, mlp_reference

from zhisuan.bench import loadgen as L
from zhisuan.bench.loadgen.mllog import _queries_needed
from zhisuan.errors import UserError
from zhisuan.runtime import load_runtime
from zhisuan.runtime.base import TensorSpec

pytest.importorskip("mlperf_loadgen")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_onnx(tmp_path_factory.mktemp("loadgen") / "mlp.onnx", inputs=512, hidden=2048)


@pytest.fixture(scope="module")
def runner(mlp: Path) -> L.BatchRunner:
    rt = load_runtime(mlp, "onnxruntime", intra_op_threads=1)
    return L.BatchRunner(rt, L.random_samples(rt.inputs(), 48, seed=3))


@pytest.fixture(scope="module")
def calibration(runner: L.BatchRunner) -> L.Calibration:
    return L.calibrate(runner, min_time_s=0.1)


# ---------------------------------------------------------------------------------------------
# real LoadGen runs


@pytest.mark.parametrize("scenario", L.SCENARIOS)
def test_every_scenario_is_valid_with_sane_percentiles(
    scenario: str, runner: L.BatchRunner, calibration: L.Calibration, tmp_path: Path
) -> None:
    # a generous Server bound: this machine is shared, and the planner's default bound is tested below
    bound = 100.0 if scenario == "server" else None
    result, window = L.run_scenario(runner, calibration, scenario, model="mlp", min_duration_s=0.5,
                                    max_duration_s=3.0, target_latency_ms=bound, log_dir=tmp_path / "logs")
    assert result.valid, result.attempts
    assert result.result_validity == "VALID"
    assert window is None
    assert result.samples_per_s and result.samples_per_s > 0
    lat = result.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert (result.p50_latency_ms, result.p90_latency_ms, result.p99_latency_ms) == (lat["p50"], lat["p90"], lat["p99"])
    assert 1 <= len(result.attempts) <= 2
    # LoadGen's own logs were kept, one directory per attempt, and parse to the same figures
    last = Path(result.attempts[-1]["log_dir"])
    assert last == tmp_path / "logs" / f"{scenario}-attempt{len(result.attempts)}"
    assert (last / "mlperf_log_summary.txt").is_file()
    summary = L.LoadGenSummary.from_entries(L.read_mllog(last))
    assert summary.valid and summary.samples_per_s == result.samples_per_s
    assert not any(p.name.startswith(".") for p in (tmp_path / "logs").iterdir())  # no half-written dirs left
    d = result.to_dict()
    for key in ("scenario", "valid", "samples_per_s", "p50_latency_ms", "p90_latency_ms", "p99_latency_ms",
                "batch_size", "runtime", "threads", "settings", "calibration", "attempts"):
        assert key in d
    assert d["threads"] == 1 and d["runtime"]["provider"] == "CPUExecutionProvider"
    assert d["official"] is False and any("not an official MLPerf result" in n for n in d["notes"])
    json.dumps(d)  # plain JSON
    if scenario == "server":
        assert result.qps and result.target_latency_ms and lat["p99"] <= result.target_latency_ms
    if scenario == "multistream":
        assert result.samples_per_query and result.query_latency_ms["p99"] > 0


def test_accuracy_mode_collects_every_response(runner: L.BatchRunner, tmp_path: Path, mlp: Path) -> None:
    # 21 samples at batch 8: two full batches and a remainder
    rt = runner.runtime
    samples = L.random_samples(rt.inputs(), 21, seed=11)
    acc_runner = L.BatchRunner(rt, samples)
    plan = L.ScenarioPlan(L.LoadGenSettings("offline", mode="accuracy", min_duration_ms=0), batch=8)
    run = L.run_loadgen(acc_runner, plan, log_dir=tmp_path / "acc", collect=True)
    assert sorted(run.responses) == list(range(21))
    assert run.accuracy_log_entries == 21  # LoadGen wrote every response to mlperf_log_accuracy.json
    assert run.batches == 3
    for i, out in run.responses.items():
        np.testing.assert_allclose(out["y"], mlp_reference(mlp, samples.feeds[i]["x"]), rtol=1e-4, atol=1e-4)
    entries = json.loads((tmp_path / "acc" / "mlperf_log_accuracy.json").read_text())
    first = next(e for e in entries if e["qsl_idx"] == 0)
    logged = np.frombuffer(bytes.fromhex(first["data"]), dtype=np.float32)
    np.testing.assert_array_equal(logged, run.responses[0]["y"].ravel())


def test_a_failing_model_is_a_user_error_not_a_hang(runner: L.BatchRunner, calibration: L.Calibration) -> None:
    class Broken:
        info = runner.runtime.info

        def inputs(self) -> list[TensorSpec]:
            return runner.runtime.inputs()

        def outputs(self) -> list[TensorSpec]:
            return runner.runtime.outputs()

        def run(self, feeds: dict, names: list | None = None) -> dict:
            raise RuntimeError("device lost")

    broken = L.BatchRunner(Broken(), runner.samples)
    with pytest.raises(UserError, match="device lost"):
        L.run_scenario(broken, calibration, "offline", model="broken", min_duration_s=0.2)


# ---------------------------------------------------------------------------------------------
# samples and batches


def test_batches_are_padded_per_rule_and_split_back() -> None:
    feeds = tuple({"ids": np.full((1, n), n, np.int64), "mask": np.ones((1, n), np.int64)} for n in (2, 5, 3))
    samples = L.SampleSet(feeds, "test", pad={"ids": (1, 0), "mask": (1, 0)})

    class Echo:
        def inputs(self) -> list[TensorSpec]:
            return [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("mask", "int64", ("batch", "seq"))]

        def outputs(self) -> list[TensorSpec]:
            return [TensorSpec("total", "int64", ("batch",))]

        def run(self, feeds: dict, names: list | None = None) -> dict:
            return {"total": (feeds["ids"] * feeds["mask"]).sum(axis=1)}

    runner = L.BatchRunner(Echo(), samples)
    assert runner.batchable and not samples.uniform()
    batch = runner.feeds([0, 1, 2])
    assert batch["ids"].shape == (3, 5) and batch["mask"].sum() == 10
    out = runner.run([2, 0])
    assert [r["total"].tolist() for r in runner.split(out, 2)] == [[9], [4]]
    assert list(runner.chunks(list(range(5)), 2)) == [[0, 1], [2, 3], [4]]


def test_offline_batches_samples_of_similar_length() -> None:
    lengths = [5, 1, 4, 2, 3, 6, 1, 5]
    feeds = tuple({"ids": np.full((1, n), n, np.int64), "mask": np.ones((1, n), np.int64)} for n in lengths)
    seen: list[int] = []

    class Echo:
        def inputs(self) -> list[TensorSpec]:
            return [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("mask", "int64", ("batch", "seq"))]

        def outputs(self) -> list[TensorSpec]:
            return [TensorSpec("total", "int64", ("batch",))]

        def run(self, feeds: dict, names: list | None = None) -> dict:
            seen.append(feeds["ids"].shape[1])
            return {"total": (feeds["ids"] * feeds["mask"]).sum(axis=1)}

    runner = L.BatchRunner(Echo(), L.SampleSet(feeds, "t", pad={"ids": (1, 0), "mask": (1, 0)}))
    assert runner.pads and [runner.length(i) for i in range(3)] == [10, 2, 8]  # both padded inputs count
    plan = L.ScenarioPlan(L.LoadGenSettings("offline", mode="accuracy", min_duration_ms=0), batch=2)
    run = L.run_loadgen(runner, plan, collect=True)
    assert sorted(seen) == [1, 3, 5, 6]  # pairs of the sorted lengths 1 1 | 2 3 | 4 5 | 5 6
    assert {i: int(r["total"][0]) for i, r in run.responses.items()} == {i: n * n for i, n in enumerate(lengths)}


def test_uneven_samples_without_a_rule_and_fixed_batch_models_run_one_by_one() -> None:
    feeds = tuple({"x": np.zeros((1, n), np.float32)} for n in (2, 3))

    class Model:
        def __init__(self, first: int | str) -> None:
            self.first = first

        def inputs(self) -> list[TensorSpec]:
            return [TensorSpec("x", "float32", (self.first, None))]

        def outputs(self) -> list[TensorSpec]:
            return [TensorSpec("y", "float32", (self.first,))]

    uneven = L.BatchRunner(Model("batch"), L.SampleSet(feeds, "t"))
    assert not uneven.batchable and uneven.max_batch == 1 and "no padding rule" in uneven.notes[0]
    fixed = L.BatchRunner(Model(1), L.SampleSet(feeds, "t", batch_axis=False))
    assert not fixed.batchable
    assert not L.dynamic_batch([TensorSpec("x", "float32", (1, 4))])
    assert not L.dynamic_batch([TensorSpec("sr", "int64", ())])
    assert L.dynamic_batch([TensorSpec("x", "float32", (None, 4))])


def test_npz_rows_become_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez(tmp_path / "b.npz", x=np.ones((2, 4), np.float32))
    samples = L.npz_samples(tmp_path, [TensorSpec("x", "float32", ("batch", 4))])
    assert len(samples) == 5 and samples.feeds[1]["x"].tolist() == [[4, 5, 6, 7]]
    (tmp_path / "a.npz").unlink()
    fixed = L.npz_samples(tmp_path, [TensorSpec("x", "float32", (2, 4))])  # a fixed batch: one file, one sample
    assert len(fixed) == 1 and not fixed.batch_axis and fixed.feeds[0]["x"].shape == (2, 4)
    with pytest.raises(UserError, match="empty"):
        L.SampleSet((), "nothing")


# ---------------------------------------------------------------------------------------------
# the planner (pure)


def _cal(rows: list[tuple[int, float, float, float]], **kw: float) -> L.Calibration:
    """Timings from (batch, p50 ms, p90 ms, min ms)."""
    timings = tuple(L.BatchTiming(b, 5, p50, p90, low, p90) for b, p50, p90, low in rows)
    return L.Calibration(timings, 1.0, True, **kw)  # type: ignore[arg-type]


CAL = _cal([(1, 10.0, 12.0, 8.0), (2, 16.0, 18.0, 15.0), (4, 28.0, 30.0, 26.0), (8, 60.0, 70.0, 55.0)],
           dispatch_ms=0.5)


def test_singlestream_plan_expects_half_the_fastest_latency() -> None:
    plan = L.plan_scenario(CAL, "singlestream", min_duration_s=3)
    s = plan.settings
    assert s.single_stream_expected_latency_ns == 4_000_000  # 0.5 x 8 ms
    assert s.min_query_count == L.SINGLESTREAM_MIN_QUERIES >= L.EARLY_STOPPING_MIN_QUERIES["singlestream"]
    assert s.min_duration_ms == 3000 and plan.batch == 1


def test_offline_plan_sizes_the_query_from_the_fastest_run_at_the_best_batch() -> None:
    plan = L.plan_scenario(CAL, "offline", min_duration_s=2)
    best = CAL.best
    assert best.batch == 4 and plan.batch == 4  # 4/28 ms beats 8/60 ms and 2/16 ms
    assert plan.settings.offline_expected_qps == pytest.approx(L.OFFLINE_QPS_MARGIN * 4e3 / 26.0, rel=1e-4)
    forced = L.plan_scenario(CAL, "offline", min_duration_s=2, batch=2)
    assert forced.batch == 2 and forced.settings.offline_expected_qps == pytest.approx(1.5 * 2e3 / 15.0, rel=1e-4)
    with pytest.raises(UserError, match="not calibrated"):
        L.plan_scenario(CAL, "offline", min_duration_s=2, batch=3)


def test_offline_plan_uses_the_probe_when_loadgen_is_the_bottleneck() -> None:
    tiny = _cal([(1, 0.01, 0.02, 0.01), (32, 0.03, 0.04, 0.03)], probe_samples_per_s=2e5, probe_batch=32)
    assert tiny.sut_limited  # 2e5 < half of 32 / 0.03 ms
    plan = L.plan_scenario(tiny, "offline", min_duration_s=1)
    assert plan.settings.offline_expected_qps == pytest.approx(3e5)
    assert not _cal([(1, 1.0, 1.0, 1.0)], probe_samples_per_s=900.0, probe_batch=1).sut_limited


def test_multistream_plan_picks_the_fastest_chunking_and_fits_the_time_cap() -> None:
    plan = L.plan_scenario(CAL, "multistream", min_duration_s=1)
    s = plan.settings
    # 8 samples: 2 x batch 4 = 56 ms beats 1 x batch 8 = 60 ms, 4 x batch 2 = 64 ms, 8 x batch 1 = 80 ms
    assert s.multi_stream_samples_per_query == 8 and plan.batch == 4
    assert s.multi_stream_expected_latency_ns == 26_000_000  # 0.5 x 2 x 26 ms (fastest runs)
    assert s.min_query_count == L.EARLY_STOPPING_MIN_QUERIES["multistream"]
    capped = L.plan_scenario(CAL, "multistream", min_duration_s=1, max_duration_s=12)
    # 662 queries x 28 ms (4 samples) = 18.5 s > 12 s; x 16 ms (2 samples) = 10.6 s fits
    assert capped.settings.multi_stream_samples_per_query == 2 and capped.batch == 2
    assert any("lowered from 8 to 2" in n for n in capped.notes)
    asked = L.plan_scenario(CAL, "multistream", min_duration_s=1, max_duration_s=1, samples_per_query=4)
    assert asked.settings.multi_stream_samples_per_query == 4  # an explicit choice is kept


def test_server_plan_bound_batch_and_qps() -> None:
    plan = L.plan_scenario(CAL, "server", min_duration_s=1)
    s = plan.settings
    bound_ms = 10 * (12.0 + 0.5)
    assert s.server_target_latency_ns == int(bound_ms * 1e6)
    # batches whose p90 + hand-over fit bound/4 = 31.25 ms: 1, 2, 4; best rate 4 / (28 + 0.5) ms
    assert plan.batch == 4
    assert s.server_target_qps == pytest.approx(L.SERVER_UTILIZATION * 4e3 / 28.5, rel=1e-4)
    assert s.min_query_count == L.SERVER_MIN_QUERIES >= L.EARLY_STOPPING_MIN_QUERIES["server"]
    assert plan.max_delay_ms == pytest.approx(0.05 * bound_ms)
    tight = L.plan_scenario(CAL, "server", min_duration_s=1, target_latency_ms=40)
    assert tight.batch == 1 and tight.max_delay_ms == 0.0  # only batch 1 fits 10 ms
    assert tight.settings.server_target_qps == pytest.approx(L.SERVER_UTILIZATION * 1e3 / 10.5, rel=1e-4)
    floor = L.plan_scenario(_cal([(1, 0.1, 0.1, 0.1)]), "server", min_duration_s=1)
    assert floor.settings.server_target_latency_ns == int(L.SERVER_MIN_BOUND_MS * 1e6)


def test_plan_rejects_bad_input() -> None:
    with pytest.raises(UserError, match="unknown scenario"):
        L.plan_scenario(CAL, "burst", min_duration_s=1)
    with pytest.raises(UserError, match="duration"):
        L.plan_scenario(CAL, "offline", min_duration_s=0)
    with pytest.raises(UserError, match="batch size 1"):
        L.Calibration((L.BatchTiming(2, 1, 1.0, 1.0, 1.0, 1.0),), 0.0, True)


# ---------------------------------------------------------------------------------------------
# the log parser and the corrective rerun (pure)


def _mllog(values: dict) -> str:
    lines = ["junk line", "================================================"]
    for key, value in values.items():
        meta = {"is_error": key.startswith("error"), "is_warning": key.startswith("warning"), "file": "x.cc"}
        lines.append(":::MLLOG " + json.dumps({"key": key, "value": value, "time_ms": 1.0,
                                               "namespace": "mlperf::logging", "event_type": "POINT_IN_TIME",
                                               "metadata": meta}))
    lines.append(':::MLLOG {"key": "cut short')  # a truncated last line is ignored
    return "\n".join(lines)


SERVER_LOG = {
    "requested_scenario": "Server", "effective_scenario": "Server", "effective_test_mode": "PerformanceOnly",
    "effective_samples_per_query": 1, "effective_target_qps": 100.0, "effective_min_query_count": 600,
    "error_runtime": "something odd", "warning_generic_message": "Logging allocation detected",
    "result_validity": "INVALID", "result_perf_constraints_met": False, "result_min_duration_met": True,
    "result_min_queries_met": True, "early_stopping_met": False,
    "result_invalid_reason": "Reduce target QPS to improve latency. ",
    "early_stopping_result": " * Run unsuccessful.  * Processed 600 queries.  * Would need to run at least 359 more queries,",
    "result_query_count": 600, "result_overlatency_query_count": 12,
    "result_scheduled_samples_per_sec": 99.5, "result_completed_samples_per_sec": 99.1,
    "result_min_latency_ns": 1_000_000, "result_max_latency_ns": 90_000_000, "result_mean_latency_ns": 9_000_000,
    "result_50.00_percentile_latency_ns": 8_000_000, "result_90.00_percentile_latency_ns": 20_000_000,
    "result_95.00_percentile_latency_ns": 30_000_000, "result_97.00_percentile_latency_ns": 40_000_000,
    "result_99.00_percentile_latency_ns": 80_000_000, "result_99.90_percentile_latency_ns": 89_000_000,
}


def test_log_parser_reads_validity_throughput_percentiles_and_early_stopping() -> None:
    entries = L.parse_mllog(_mllog(SERVER_LOG))
    assert len(entries) == len(SERVER_LOG)
    s = L.LoadGenSummary.from_entries(entries)
    assert s.scenario == "Server" and s.mode == "PerformanceOnly" and not s.valid
    assert s.samples_per_s == 99.1 and s.scheduled_samples_per_s == 99.5
    assert s.latency_ns == {"min": 1e6, "max": 9e7, "mean": 9e6, "p50": 8e6, "p90": 2e7, "p95": 3e7, "p97": 4e7,
                            "p99": 8e7, "p99.9": 8.9e7}
    assert s.perf_constraints_met is False and s.early_stopping_met is False
    assert "359 more queries" in s.early_stopping_result and s.query_count == 600
    assert s.errors == ("error_runtime: something odd",) and len(s.warnings) == 1
    assert s.effective["target_qps"] == 100.0
    assert _queries_needed(s.early_stopping_result, s.query_count) == 959
    assert _queries_needed(" * Need to process at least 662 queries for early stopping.", 100) == 662


def test_offline_and_multistream_throughput_from_the_log() -> None:
    offline = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog({
        "effective_scenario": "Offline", "result_validity": "VALID", "result_samples_per_second": 812.5})))
    assert offline.valid and offline.samples_per_s == 812.5
    multi = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog({
        "effective_scenario": "MultiStream", "effective_samples_per_query": 8,
        "result_mean_query_latency_ns": 4_000_000, "result_99.00_percentile_per_query_latency_ns": 6_000_000})))
    assert multi.samples_per_s == pytest.approx(2000.0) and multi.query_latency_ns["p99"] == 6e6


def _server_plan(qps: float = 100.0, bound_ms: float = 50.0) -> L.ScenarioPlan:
    return L.ScenarioPlan(L.LoadGenSettings("server", min_duration_ms=1000, min_query_count=600,
                                            server_target_qps=qps, server_target_latency_ns=int(bound_ms * 1e6)), 1)


def test_rerun_lowers_server_qps_from_loadgens_numbers() -> None:
    summary = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog(SERVER_LOG)))
    plan = L.adjust_plan(_server_plan(), summary)
    assert plan is not None
    # not overloaded (99.1 of 99.5 done): QPS x 0.6 x bound / p99 = 100 x 0.6 x 50 / 80
    assert plan.settings.server_target_qps == pytest.approx(37.5)
    # more queries do not fix latency over the bound, but they let early stopping absorb a few outliers
    assert plan.settings.min_query_count == L.SERVER_RERUN_QUERY_FACTOR * 600
    overloaded = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog({
        **SERVER_LOG, "result_completed_samples_per_sec": 60.0})))
    plan = L.adjust_plan(_server_plan(), overloaded)
    assert plan is not None and plan.settings.server_target_qps == pytest.approx(L.SERVER_UTILIZATION * 60.0)
    assert plan.expected_duration_s == pytest.approx(L.SERVER_RERUN_QUERY_FACTOR * 600 / (L.SERVER_UTILIZATION * 60.0))


def test_rerun_raises_queries_or_expected_qps() -> None:
    es = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog({
        **SERVER_LOG, "result_perf_constraints_met": True, "result_validity": "INVALID"})))
    plan = L.adjust_plan(_server_plan(), es)
    assert plan is not None and plan.settings.min_query_count == int(np.ceil(1.1 * 959))
    short = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog({
        "effective_scenario": "Offline", "result_validity": "INVALID", "result_min_duration_met": False,
        "result_samples_per_second": 400.0})))
    offline = L.ScenarioPlan(L.LoadGenSettings("offline", min_duration_ms=1000, offline_expected_qps=200.0), 4)
    plan = L.adjust_plan(offline, short)
    assert plan is not None and plan.settings.offline_expected_qps == pytest.approx(520.0)
    valid = L.LoadGenSummary.from_entries(L.parse_mllog(_mllog({"result_validity": "VALID"})))
    assert L.adjust_plan(offline, valid) is None


def test_settings_map_onto_loadgen_test_settings() -> None:
    import mlperf_loadgen as lg

    s = L.LoadGenSettings("server", min_duration_ms=1500, min_query_count=700, server_target_qps=12.5,
                          server_target_latency_ns=30_000_000, server_target_latency_percentile=0.99, seed=7)
    ts = s.test_settings(lg)
    assert ts.scenario == lg.TestScenario.Server and ts.mode == lg.TestMode.PerformanceOnly
    assert (ts.min_duration_ms, ts.min_query_count, ts.server_target_qps) == (1500, 700, 12.5)
    assert ts.server_target_latency_ns == 30_000_000 and ts.schedule_rng_seed == 7
    assert s.to_dict()["server_target_qps"] == 12.5 and "offline_expected_qps" not in s.to_dict()
    with pytest.raises(UserError, match="unknown scenario"):
        L.LoadGenSettings("burst")
