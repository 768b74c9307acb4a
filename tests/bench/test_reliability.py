"""EV-9 reliability: drift and throttling from fake histories, planted nondeterminism and corruption,
recovery after real failures."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from zhisuan.bench import reliability as rel
from zhisuan.errors import UserError


class FakeClock:
    """Advances by ``step`` seconds on every read."""

    def __init__(self, step: float) -> None:
        self.t = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_drift_is_last_minus_first_over_first() -> None:
    assert rel.throughput_drift([100.0, 120.0, 90.0]) == pytest.approx(-0.1)
    assert rel.throughput_drift([50.0, 60.0]) == pytest.approx(0.2)
    for bad in ([100.0], [0.0, 1.0]):
        with pytest.raises(UserError):
            rel.throughput_drift(bad)


def test_sustained_load_counts_exceptions_and_wrong_outputs() -> None:
    reference = np.linspace(0, 1, 10)
    calls = itertools.count()

    def run() -> np.ndarray:
        n = next(calls)
        if n == 3:
            raise RuntimeError("device lost")
        if n == 5:
            return reference + 0.5  # a silently wrong result
        return reference.copy()

    result = rel.sustained_load(run, samples_per_call=4, duration_s=1.0, window_s=0.25, reference=reference,
                                clock=FakeClock(0.01))
    assert result.exceptions == 1 and result.wrong_outputs == 1 and result.errors == 2
    assert "RuntimeError: device lost" in result.first_errors[0]
    assert len(result.windows) == 4
    assert sum(w.samples for w in result.windows) == 4 * (result.calls - 2)
    assert all(w.samples_per_s > 0 for w in result.windows)
    assert result.drift is not None


def test_sustained_load_sees_a_slowing_device() -> None:
    clock = FakeClock(0.0)
    n = itertools.count()

    def run() -> np.ndarray:
        clock.t += 0.01 * (1 + next(n) / 50)  # every call a little slower than the last
        return np.zeros(1)

    result = rel.sustained_load(run, samples_per_call=1, duration_s=4.0, window_s=1.0, clock=clock)
    assert result.errors == 0 and result.drift < -0.3


def _sample(t: float, clock: float | None, temp: float | None = None, domain: str = "sm") -> tuple[float, Any]:
    clocks = {domain: clock} if clock is not None else {}
    unavailable = {} if clock is not None else {f"clocks_mhz.{domain}": "not readable (fake)"}
    return t, SimpleNamespace(clocks_mhz=clocks, temperature_c=temp, unavailable=unavailable)


def _windows(n: int, length: float = 10.0) -> list[rel.LoadWindow]:
    return [rel.LoadWindow(i * length, (i + 1) * length, 100, 0) for i in range(n)]


def test_throttling_detected_from_a_falling_clock() -> None:
    points = [_sample(t, 1980.0 if t < 20 else 1500.0, 60 + t) for t in np.arange(0.5, 30, 0.5)]
    result = rel.throttling_from_history(points, _windows(3))
    assert result.clock_domain == "sm" and result.throttled
    assert result.clock_ratio == pytest.approx(1500 / 1980)
    assert result.window_max_temperature_c[-1] == pytest.approx(89.5)


def test_steady_clock_is_not_throttling() -> None:
    points = [_sample(t, 1980.0 + (t % 2), None) for t in np.arange(0.5, 30, 0.5)]
    result = rel.throttling_from_history(points, _windows(3))
    assert result.throttled is False and result.clock_ratio > 0.99


def test_static_or_missing_clock_cannot_show_throttling() -> None:
    static = rel.throttling_from_history([_sample(t, 2596.0, domain="cpu") for t in range(1, 30)], _windows(3))
    assert static.clock_ratio is None and "static value" in static.reason
    missing = rel.throttling_from_history([_sample(t, None) for t in range(1, 30)], _windows(3))
    assert missing.clock_ratio is None and "not readable (fake)" in missing.reason
    assert rel.throttling_from_history([], _windows(1)).reason


def test_history_reader_keeps_only_new_snapshots_of_its_device() -> None:
    def snap(t: float) -> Any:
        return SimpleNamespace(timestamp_s=t, samples=(SimpleNamespace(id="cpu:0"), SimpleNamespace(id="cuda:0")))

    history = [snap(1.0), snap(2.0)]
    reader = rel.HistoryReader(SimpleNamespace(history=lambda: list(history)), "cuda:0")
    reader.collect()
    history.append(snap(3.0))
    reader.collect()
    assert [t for t, _ in reader.points] == [1.0, 2.0, 3.0]


def test_determinism_detects_a_planted_nondeterministic_function() -> None:
    rng = np.random.default_rng(0)
    base = {"y": np.linspace(0, 1, 100, dtype=np.float32)}

    def steady() -> dict[str, np.ndarray]:
        return {"y": base["y"].copy()}

    def flaky() -> dict[str, np.ndarray]:
        y = base["y"].copy()
        if rng.random() < 0.5:
            y[7] = np.nextafter(y[7], np.float32(2))  # one ulp: only a bitwise check sees it
        return {"y": y}

    ok = rel.check_determinism(steady, repeats=10, fresh=[steady, steady])
    assert ok.deterministic and ok.max_abs_diff == 0.0 and ok.identical_sessions == 2
    bad = rel.check_determinism(flaky, repeats=40)
    assert not bad.deterministic and 0 < bad.max_abs_diff < 1e-6 and bad.identical_runs < 40
    session = rel.check_determinism(steady, repeats=2, fresh=[lambda: {"y": base["y"] * 2}])
    assert not session.deterministic and session.session_max_abs_diff == pytest.approx(1.0)


def test_sdc_passes_a_healthy_gemm_and_flags_a_corrupt_one() -> None:
    torch = pytest.importorskip("torch")
    healthy = rel.gemm_sdc(size=64, repeats=5)
    assert healthy.beyond_bound == 0 and healthy.max_error_over_bound < 1 and healthy.repeats_bitwise_different == 0
    calls = itertools.count()

    def corrupt(a: Any, b: Any) -> Any:
        c = torch.matmul(a, b)
        if next(calls) == 2:
            c[3, 4] += 1e-2  # one flipped-looking element in one repeat
        return c

    bad = rel.gemm_sdc(size=64, repeats=5, matmul=corrupt)
    assert bad.beyond_bound == 1 and bad.repeats_with_errors == 1 and bad.repeats_bitwise_different == 1
    with pytest.raises(UserError):
        rel.gemm_sdc(size=0, repeats=1)


def test_failing_model_loads_but_raises() -> None:
    with pytest.raises(Exception, match="Reshape"):
        rel._run_failing_onnx_model()


def test_recovery_after_real_failures_on_cpu() -> None:
    reference = np.arange(6, dtype=np.float32)
    cases = rel.recovery_checks(lambda: reference.copy(), reference, device=SimpleNamespace(kind="cpu", index=0))
    assert len(cases) == 3 and all(c.recovered for c in cases), [c.to_dict() for c in cases]
    assert "MemoryError" in cases[1].error and "SIGSEGV" in cases[2].error
    assert "0 elements beyond" in cases[2].detail


def test_recovery_reports_a_device_that_does_not_come_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # light children (no torch import): this test is about the follow-up job failing. They are
    # found on this process's sys.path, which the children inherit.
    (tmp_path / "light_crash.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    (tmp_path / "light_check.py").write_text("print('{\"beyond_bound\": 0, \"max_abs_error\": 0.0}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(rel, "_CRASHING_CHILD", "light_crash")
    monkeypatch.setattr(rel, "_CHECK_CHILD", "light_check")
    reference = np.arange(6, dtype=np.float32)
    broken = rel.recovery_checks(lambda: reference + 1, reference, device=SimpleNamespace(kind="cpu", index=0))
    assert not any(c.recovered for c in broken) and all(c.failed_as_expected for c in broken), [c.to_dict() for c in broken]


def test_sustained_task_items_with_a_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zhisuan.bench.tasks import EvalContext

    out = np.ones((1, 3), np.float32)

    class FakeRuntime:
        def __enter__(self) -> FakeRuntime:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def run(self, feeds: Any, names: Any = None) -> dict[str, np.ndarray]:
            return {"logits": out}

    job = rel.ModelJob("tiny", "fake", "cpu", 2, {"x": np.zeros(1)}, "logits", FakeRuntime)
    monkeypatch.setattr(rel, "model_job", lambda *a, **kw: job)
    ctx = EvalContext(suite="quick", device=SimpleNamespace(kind="cpu", index=0, id="cpu:0"), threads=1,
                      work_dir=tmp_path, options={"sustained_s": 0.6})
    items = {i.id: i for i in rel.measure_sustained(ctx)}
    assert items["EV-9.sustained.errors"].value == 0 and items["EV-9.sustained.errors"].status == "pass"
    assert items["EV-9.sustained.samples_per_s"].value > 0
    assert items["EV-9.sustained.samples_per_s"].details["series"]["x_label"] == "time (s)"
    assert items["EV-9.sustained.throttling"].status == "skip" and "sampler" in items["EV-9.sustained.throttling"].reason
    assert "EV-9.sustained.drift" in items and items["EV-7.sustained.energy"].status == "skip"


@pytest.mark.gpu
def test_sdc_on_gpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no NVIDIA GPU")
    result = rel.gemm_sdc(size=1024, repeats=10, device=torch.device("cuda", 0))
    assert result.beyond_bound == 0
