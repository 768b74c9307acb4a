"""EV-9 reliability: sustained load, throttling, determinism, silent data corruption, recovery.

- **Sustained load** runs a zoo image classifier (efficientnet-lite0; resnet50 if its weights
  package is missing) back to back at full throughput on the device under test for the suite's
  duration (quick 60 s, standard 10 min, full 1 h): ONNX Runtime with every thread on a CPU, the
  PyTorch module on a GPU. Every call is checked: an exception or an output that differs from
  the first one by more than 1e-4 of its range counts as an error. Throughput is recorded per
  window (5 s / 30 s / 60 s) and ``drift = (last window - first window) / first window``.
- **Throttling** reads the running telemetry sampler's clocks (and temperature) over the same
  window: the lowest window-median clock as a percentage of the highest. A clock reading that
  never changes under load (e.g. ``/proc/cpuinfo`` in a VM) cannot show throttling, so the item
  is skipped with that reason, as it is when there is no clock reading at all.
- **Determinism** runs the same inputs through the same loaded model N times and through fresh
  sessions, and reports the largest absolute difference; bitwise identical is the pass. On a GPU
  it is measured twice: default settings, and with ``torch.use_deterministic_algorithms(True)``.
- **Silent data corruption** repeats one FP32 GEMM of fixed seeded matrices many times and checks
  each result against a float64 reference computed once on the host: an element off by more than
  the worst-case FP32 rounding bound ``(K + 2) * 2**-24 * (|A| @ |B|)`` is corruption. Bitwise
  differences between repeats are counted too (they are not errors, but they are nondeterminism).
- **Recovery** makes jobs fail on purpose — an ONNX model that raises at run time, an allocation
  far beyond the device memory, a child process that dies from SIGSEGV while using the device — and
  after each checks that the next job on the same device runs and gives the reference result.

>>> from zhisuan.bench.reliability import throughput_drift
>>> throughput_drift([100.0, 98.0, 95.0])
-0.05
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zhisuan._child import child_command, child_env
from zhisuan.bench._process import exit_text
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

CLAUSE = "EV-9"
MAX_DRIFT = -0.10  # a throughput drop of more than 10% from the first to the last window fails
MIN_CLOCK_RATIO = 0.90  # a window whose median clock is below 90% of the best window's is throttled
OUTPUT_TOLERANCE = 1e-4  # relative to the output's range: beyond it a sustained-load output is an error


# ---------------------------------------------------------------------------------------------
# the model job


@dataclass
class ModelJob:
    """A zoo model ready to run on the device under test, plus how to open a fresh session."""

    model: str
    runtime: str
    device: str
    batch: int
    feeds: dict[str, np.ndarray]
    output: str
    open: Callable[[], Any]  # -> a zhisuan Runtime (a fresh session every call)

    def describe(self) -> str:
        return f"{self.model} on {self.runtime} ({self.device}), batch {self.batch}"


def model_job(device: Any, *, threads: int, batch: int, seed: int) -> ModelJob:
    """efficientnet-lite0 (or resnet50 when its weights are missing) on ``device``."""
    from zhisuan import zoo
    from zhisuan.runtime import load_runtime
    from zhisuan.runtime.feeds import random_feeds

    kind = getattr(device, "kind", "cpu")
    last: Exception | None = None
    for name in ("efficientnet-lite0", "resnet50"):
        try:
            if kind == "cuda":
                entry = zoo.get(name)
                torch_model = entry.torch_model()
                target = f"cuda:{device.index}"

                def opener(tm: Any = torch_model, target: str = target) -> Any:
                    return load_runtime(tm, "torch", device=target)

                runtime = "torch"
            else:
                path = zoo.model_path(name)

                def opener(path: Any = path) -> Any:
                    return load_runtime(path, "onnxruntime", device="cpu", intra_op_threads=threads)

                runtime, target = "onnxruntime", "cpu"
            with opener() as rt:
                specs = [s for s in rt.inputs()]
                output = rt.outputs()[0].name
            if kind == "cuda":  # the torch runner has no dtypes in its specs: the zoo's ONNX file has
                from zhisuan.runtime.onnx_signature import onnx_signature

                specs = onnx_signature(zoo.model_path(name))[0]
            feeds = random_feeds(specs, batch=batch, seed=seed)
            return ModelJob(name, runtime, target, batch, feeds, output, opener)
        except UserError as exc:
            last = exc
    raise UserError(f"no zoo image model can run here: {last}")


# ---------------------------------------------------------------------------------------------
# sustained load


@dataclass(frozen=True)
class LoadWindow(Record):
    start_s: float  # time.time() at the window start
    end_s: float
    samples: int
    errors: int

    @property
    def samples_per_s(self) -> float:
        return self.samples / (self.end_s - self.start_s) if self.end_s > self.start_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "samples_per_s": self.samples_per_s}


@dataclass(frozen=True)
class SustainedResult(Record):
    duration_s: float
    windows: tuple[LoadWindow, ...]
    calls: int
    exceptions: int
    wrong_outputs: int
    first_errors: tuple[str, ...]

    @property
    def errors(self) -> int:
        return self.exceptions + self.wrong_outputs

    @property
    def samples_per_s(self) -> float:
        total = sum(w.samples for w in self.windows)
        return total / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def drift(self) -> float | None:
        rates = [w.samples_per_s for w in self.windows]
        return throughput_drift(rates) if len(rates) >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        windows = d.pop("windows")  # last, after the figures computed from them
        return {**d, "samples_per_s": self.samples_per_s, "drift": self.drift, "windows": windows}


def throughput_drift(rates: Sequence[float]) -> float:
    """``(last - first) / first`` of per-window throughputs."""
    if len(rates) < 2 or rates[0] <= 0:
        raise UserError("drift needs at least two windows and a positive first window")
    return (rates[-1] - rates[0]) / rates[0]


def sustained_load(
    run: Callable[[], np.ndarray],
    *,
    samples_per_call: int,
    duration_s: float,
    window_s: float,
    reference: np.ndarray | None = None,
    tolerance: float = OUTPUT_TOLERANCE,
    clock: Callable[[], float] = time.time,
    on_window: Callable[[LoadWindow, float], None] | None = None,
) -> SustainedResult:
    """Call ``run`` back to back for ``duration_s``; count exceptions and outputs off the reference."""
    if duration_s <= 0 or window_s <= 0:
        raise UserError("duration and window must be positive")
    start = clock()
    end = start + duration_s
    windows: list[LoadWindow] = []
    w_start, w_samples, w_errors = start, 0, 0
    calls = exceptions = wrong = 0
    first_errors: list[str] = []
    limit = None
    if reference is not None:
        span = float(np.max(reference) - np.min(reference)) if reference.size else 0.0
        limit = tolerance * max(span, 1e-12)
    while True:
        now = clock()
        if now >= w_start + window_s or now >= end:
            window = LoadWindow(w_start, now, w_samples, w_errors)
            windows.append(window)
            if on_window is not None:
                on_window(window, now - start)
            w_start, w_samples, w_errors = now, 0, 0
            if now >= end:
                break
        calls += 1
        try:
            out = run()
        except Exception as exc:
            exceptions += 1
            w_errors += 1
            if len(first_errors) < 5:
                first_errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        if limit is not None and (out.shape != reference.shape or not np.all(np.isfinite(out))
                                  or float(np.max(np.abs(out - reference))) > limit):
            wrong += 1
            w_errors += 1
            if len(first_errors) < 5:
                first_errors.append("output differs from the first call's")
            continue
        w_samples += samples_per_call
    return SustainedResult(clock() - start, tuple(windows), calls, exceptions, wrong, tuple(first_errors))


# ---------------------------------------------------------------------------------------------
# throttling from telemetry


class HistoryReader:
    """Collects the sampler's snapshots of one device as they arrive (its history is bounded)."""

    def __init__(self, sampler: Any, device_id: str) -> None:
        self.sampler = sampler
        self.device_id = device_id
        self.points: list[tuple[float, Any]] = []  # (timestamp_s, DeviceSample)
        self._last = -math.inf

    def collect(self) -> None:
        if self.sampler is None:
            return
        for snap in self.sampler.history():
            if snap.timestamp_s <= self._last:
                continue
            self._last = snap.timestamp_s
            for s in snap.samples:
                if s.id == self.device_id:
                    self.points.append((float(snap.timestamp_s), s))


@dataclass(frozen=True)
class ThrottleResult(Record):
    clock_domain: str | None
    window_median_mhz: tuple[float | None, ...]
    window_max_temperature_c: tuple[float | None, ...]
    clock_samples: int
    clock_ratio: float | None  # lowest window median / highest window median
    reason: str | None = None  # why throttling could not be judged
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def throttled(self) -> bool | None:
        return None if self.clock_ratio is None else self.clock_ratio < MIN_CLOCK_RATIO

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "throttled": self.throttled}


def throttling_from_history(points: Sequence[tuple[float, Any]], windows: Sequence[LoadWindow],
                            *, domain: str | None = None) -> ThrottleResult:
    """Per-window median clock and max temperature of the samples inside each load window."""
    if not points:
        return ThrottleResult(None, (), (), 0, None, "no telemetry samples were taken during the sustained load")
    domains = [d for s in (p[1] for p in points) for d in s.clocks_mhz]
    chosen = domain or ("sm" if "sm" in domains else "cpu" if "cpu" in domains else (domains[0] if domains else None))
    medians: list[float | None] = []
    temps: list[float | None] = []
    clocks_all: list[float] = []
    for w in windows:
        inside = [s for t, s in points if w.start_s <= t <= w.end_s]
        clocks = [float(s.clocks_mhz[chosen]) for s in inside if chosen and chosen in s.clocks_mhz]
        t_values = [float(s.temperature_c) for s in inside if s.temperature_c is not None]
        clocks_all += clocks
        medians.append(statistics.median(clocks) if clocks else None)
        temps.append(max(t_values) if t_values else None)
    unavailable = dict(points[-1][1].unavailable)
    if not clocks_all:
        why = unavailable.get(f"clocks_mhz.{chosen}") or next(
            (v for k, v in unavailable.items() if k.startswith("clocks")), "the device reports no clock")
        return ThrottleResult(chosen, tuple(medians), tuple(temps), 0, None, f"no clock reading: {why}", unavailable)
    if len(set(clocks_all)) == 1:
        return ThrottleResult(
            chosen, tuple(medians), tuple(temps), len(clocks_all), None,
            f"the {chosen} clock read {clocks_all[0]:g} MHz in all {len(clocks_all)} samples under load: a static "
            "value (e.g. /proc/cpuinfo in a VM), so throttling cannot be observed", unavailable)
    known = [m for m in medians if m is not None]
    return ThrottleResult(chosen, tuple(medians), tuple(temps), len(clocks_all), min(known) / max(known),
                          None, unavailable)


# ---------------------------------------------------------------------------------------------
# determinism


@dataclass(frozen=True)
class DeterminismResult(Record):
    runs: int
    identical_runs: int  # bitwise equal to the first run
    max_abs_diff: float
    sessions: int  # fresh sessions compared with the first
    identical_sessions: int
    session_max_abs_diff: float

    @property
    def deterministic(self) -> bool:
        return self.identical_runs == self.runs and self.identical_sessions == self.sessions

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "deterministic": self.deterministic}


def _diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> tuple[bool, float]:
    identical, worst = True, 0.0
    for name, ref in a.items():
        other = np.asarray(b[name])
        ref = np.asarray(ref)
        if other.shape != ref.shape or other.dtype != ref.dtype:
            return False, math.inf
        if not np.array_equal(ref.view(np.uint8), other.view(np.uint8)):  # bitwise, NaN-safe
            identical = False
            d = np.abs(ref.astype(np.float64) - other.astype(np.float64))
            worst = max(worst, float(np.nanmax(d)) if d.size else 0.0)
    return identical, worst


def check_determinism(
    run: Callable[[], Mapping[str, np.ndarray]],
    *,
    repeats: int,
    fresh: Sequence[Callable[[], Mapping[str, np.ndarray]]] = (),
) -> DeterminismResult:
    """``run`` ``repeats`` times plus each ``fresh`` session once; compare all with the first run."""
    if repeats < 2:
        raise UserError(f"determinism needs at least 2 runs, got {repeats}")
    first = {k: np.array(v, copy=True) for k, v in run().items()}
    identical, worst = 1, 0.0
    for _ in range(repeats - 1):
        same, d = _diff(first, run())
        identical += same
        worst = max(worst, d)
    s_identical, s_worst = 0, 0.0
    for session in fresh:
        same, d = _diff(first, session())
        s_identical += same
        s_worst = max(s_worst, d)
    return DeterminismResult(repeats, identical, worst, len(fresh), s_identical, s_worst)


# ---------------------------------------------------------------------------------------------
# silent data corruption


@dataclass(frozen=True)
class SdcResult(Record):
    size: int
    repeats: int
    elements_checked: int
    beyond_bound: int  # elements farther from the float64 reference than the FP32 rounding bound
    repeats_with_errors: int
    repeats_bitwise_different: int  # results not bitwise equal to the first repeat
    max_abs_error: float
    max_error_over_bound: float  # the largest |error| / bound (< 1 is within the bound)
    seconds: float


def gemm_sdc(*, size: int, repeats: int, device: Any = None, seed: int = 0,
             matmul: Callable[[Any, Any], Any] | None = None,
             progress: Progress = no_progress) -> SdcResult:
    """Repeat ``A @ B`` (FP32, seeded) and compare every result with one float64 host reference."""
    import torch

    if size < 1 or repeats < 1:
        raise UserError("the GEMM size and the number of repeats must be positive")
    device = device or torch.device("cpu")
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.0, 1.0, (size, size)).astype(np.float32)
    b = rng.uniform(-1.0, 1.0, (size, size)).astype(np.float32)
    reference = a.astype(np.float64) @ b.astype(np.float64)  # computed once, on the host
    bound = (size + 2) * 2.0**-24 * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    ref_t = torch.from_numpy(reference).to(device)
    bound_t = torch.from_numpy(bound).to(device)
    mm = matmul or torch.matmul
    first = None
    beyond = repeats_bad = bitwise = 0
    max_err = max_ratio = 0.0
    t0 = time.perf_counter()
    with _fp32_matmul():
        for r in range(repeats):
            c = mm(ta, tb)
            err = (c.double() - ref_t).abs()
            bad = int((~(err <= bound_t)).sum())  # NaN counts as bad
            beyond += bad
            repeats_bad += bad > 0
            max_err = max(max_err, float(torch.nan_to_num(err, nan=math.inf).max()))
            max_ratio = max(max_ratio, float(torch.nan_to_num(err / bound_t, nan=math.inf).max()))
            if first is None:
                first = c.clone()
            elif not torch.equal(c.view(torch.int32), first.view(torch.int32)):
                bitwise += 1
            if (r + 1) % max(1, repeats // 20) == 0:
                progress("silent data corruption: repeated GEMM", done=r + 1, total=repeats)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return SdcResult(size, repeats, size * size * repeats, beyond, repeats_bad, bitwise, max_err, max_ratio,
                     time.perf_counter() - t0)


@contextlib.contextmanager
def _fp32_matmul() -> Iterator[None]:
    """True FP32 matmul for the block (no TF32 on GPUs), then the previous setting."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


# ---------------------------------------------------------------------------------------------
# recovery after a failed job


@dataclass(frozen=True)
class RecoveryCase(Record):
    failure: str
    failed_as_expected: bool
    error: str
    next_job_ok: bool
    next_job_max_abs_diff: float | None
    detail: str = ""

    @property
    def recovered(self) -> bool:
        return self.failed_as_expected and self.next_job_ok

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "recovered": self.recovered}


def failing_onnx_model() -> bytes:
    """A model that loads but raises at run time: Reshape to a shape that does not fit its input."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "fails_at_run_time",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "cols"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


_CRASHING_CHILD = "zhisuan.bench.children.reliability_crash"
_CHECK_CHILD = "zhisuan.bench.children.reliability_gemm_check"


def recovery_checks(
    next_job: Callable[[], np.ndarray],
    reference: np.ndarray,
    *,
    device: Any,
    timeout_s: float = 120.0,
) -> list[RecoveryCase]:
    """Three failures on purpose, each followed by ``next_job`` compared with ``reference``."""
    kind = getattr(device, "kind", "cpu")
    index = int(getattr(device, "index", 0))

    def follow_up() -> tuple[bool, float | None, str]:
        try:
            out = np.asarray(next_job())
        except Exception as exc:
            return False, None, f"the next job raised {type(exc).__name__}: {str(exc)[:200]}"
        if out.shape != reference.shape:
            return False, None, f"the next job returned shape {list(out.shape)}, expected {list(reference.shape)}"
        diff = float(np.max(np.abs(out.astype(np.float64) - reference.astype(np.float64))))
        span = float(np.max(reference) - np.min(reference)) or 1.0
        return diff <= OUTPUT_TOLERANCE * span, diff, ""

    cases = []
    # 1. a job that fails at run time
    failed, error = False, ""
    if kind == "cuda":
        failure = "CUDA job that raises (matmul of 3x4 by 5x6 tensors on the GPU)"
        import torch

        try:
            dev = torch.device("cuda", index)
            torch.ones(3, 4, device=dev) @ torch.ones(5, 6, device=dev)
            torch.cuda.synchronize(dev)
        except RuntimeError as exc:
            failed, error = True, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    else:
        failure = "ONNX model that raises at run time (Reshape of 4 elements to 3x3, ONNX Runtime)"
        try:
            _run_failing_onnx_model()
        except Exception as exc:  # ORT raises its own Fail type
            failed, error = True, _first_line(exc)
    ok, diff, note = follow_up()
    cases.append(RecoveryCase(failure, failed, error, ok, diff, note))
    # 2. an allocation far beyond the device memory
    failed, error = False, ""
    try:
        _oversized_allocation(kind, index)
    except (MemoryError, RuntimeError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        failed, error = True, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        if kind == "cuda":
            import torch

            torch.cuda.empty_cache()
    ok, diff, note = follow_up()
    cases.append(RecoveryCase("allocation far beyond the device memory, caught", failed, error, ok, diff, note))
    # 3. a child process that dies from SIGSEGV while using the device
    crashed = subprocess.run(child_command(_CRASHING_CHILD, kind, str(index)), capture_output=True,
                             timeout=timeout_s, check=False, env=child_env())
    failed = crashed.returncode == -signal.SIGSEGV
    error = f"the child exited with {exit_text(crashed.returncode)}"
    ok, diff, note = follow_up()
    checked = subprocess.run(child_command(_CHECK_CHILD, kind, str(index)), capture_output=True,
                             timeout=timeout_s, check=False, env=child_env())
    child = ""
    if checked.returncode != 0:
        ok = False
        child = f"a fresh process could not use the device: {exit_text(checked.returncode)}"
    else:
        report = json.loads(checked.stdout.decode().strip().splitlines()[-1])
        child = (f"a fresh process then ran a 512x512 FP32 GEMM: {report['beyond_bound']} elements beyond the "
                 f"rounding bound (max abs error {report['max_abs_error']:.2e})")
        ok = ok and report["beyond_bound"] == 0
    cases.append(RecoveryCase("child process killed by SIGSEGV while using the device", failed, error, ok, diff,
                              "; ".join(x for x in (note, child) if x)))
    return cases


def _run_failing_onnx_model() -> None:
    import onnxruntime as ort

    from zhisuan.runtime import load_runtime

    # the failure is on purpose: keep ORT's error log off the console
    session = load_runtime(failing_onnx_model(), "onnxruntime", log_severity_level=4).session
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    session.run(None, {"x": np.arange(4, dtype=np.float32), "shape": np.array([3, 3], dtype=np.int64)}, run_options)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(text[0] if text else '')[:240]}"


def _oversized_allocation(kind: str, index: int) -> None:
    if kind == "cuda":
        import torch

        total = torch.cuda.get_device_properties(index).total_memory
        torch.empty(2 * total, dtype=torch.uint8, device=torch.device("cuda", index))
    else:
        np.empty(1 << 50, dtype=np.uint8)  # 1 PiB: beyond any address space a process gets


# ---------------------------------------------------------------------------------------------
# tasks


def _run_output(rt: Any, job: ModelJob) -> np.ndarray:
    return rt.run(job.feeds, [job.output])[job.output]


@task("EV-9.sustained", clause=CLAUSE, title="Sustained load: errors, throughput drift, throttling",
      est_s={"quick": 70, "standard": 620, "full": 3620}, device_kinds=("cpu", "cuda"))
def measure_sustained(ctx: EvalContext) -> list[Item]:
    """Sustained full-throughput inference: errors, throughput drift and throttling."""
    from zhisuan.bench.energy import energy_items, energy_window

    duration = float(ctx.options.get("sustained_s") or ctx.pick(quick=60, standard=600, full=3600))
    window_s = ctx.pick(quick=5.0, standard=30.0, full=60.0) if "sustained_s" not in ctx.options \
        else max(duration / 12, 0.5)
    kind = getattr(ctx.device, "kind", "cpu")
    batch = 32 if kind == "cuda" else 4
    ctx.progress("loading the model", done=0, total=duration)
    job = model_job(ctx.device, threads=ctx.threads, batch=batch, seed=ctx.seed)
    reader = HistoryReader(ctx.sampler, ctx.device.id)
    with job.open() as rt:
        for _ in range(3):  # warm-up, outside the timed window
            reference = _run_output(rt, job)

        def on_window(window: LoadWindow, elapsed: float) -> None:
            reader.collect()
            ctx.progress(f"sustained load: {window.samples_per_s:,.1f} samples/s in the last window",
                         done=min(elapsed, duration), total=duration)

        with energy_window(ctx) as energy:
            result = sustained_load(lambda: _run_output(rt, job), samples_per_call=job.batch, duration_s=duration,
                                    window_s=window_s, reference=reference, on_window=on_window)
    reader.collect()
    rates = [w.samples_per_s for w in result.windows]
    mids = [round((w.start_s + w.end_s) / 2 - result.windows[0].start_s, 2) for w in result.windows]
    method = (f"{job.describe()} called back to back for {duration:g} s after 3 warm-up calls; every call "
              f"checked (an exception, or an output more than {OUTPUT_TOLERANCE:g} x its range from the first "
              f"call's, is an error); throughput per {window_s:g} s window")
    items = [
        Item.measured("EV-9.sustained.errors", CLAUSE, "Errors under sustained load", value=result.errors,
                      unit="errors", method=method, repeats=result.calls,
                      status="pass" if result.errors == 0 else "fail",
                      reason=None if result.errors == 0 else
                      f"{result.exceptions} exception(s), {result.wrong_outputs} wrong output(s) in {result.calls} "
                      f"calls: {'; '.join(result.first_errors)}",
                      details={"sustained": result.to_dict(), "model": job.model, "higher_is_better": False,
                               "timed": False}),
        Item.measured("EV-9.sustained.samples_per_s", CLAUSE, "Throughput under sustained load",
                      value=result.samples_per_s, unit="samples/s", method=method + "; value over the whole run, "
                      "spread over windows", samples=rates,
                      details={"series": {"x": mids, "y": rates, "x_label": "time (s)", "y_label": "samples/s",
                                          "label": job.model}}),
    ]
    drift = result.drift
    if drift is None:
        items.append(Item.skipped("EV-9.sustained.drift", CLAUSE, "Throughput drift, first to last window",
                                  unit="%", reason="the run had fewer than two windows"))
    else:
        ok = drift >= MAX_DRIFT
        items.append(Item.measured(
            "EV-9.sustained.drift", CLAUSE, "Throughput drift, first to last window", value=100.0 * drift, unit="%",
            method=f"(last window - first window) / first window of {len(rates)} windows of {window_s:g} s; "
                   f"fails below {100 * MAX_DRIFT:g}%", repeats=len(rates),
            status="pass" if ok else "fail",
            reason=None if ok else f"throughput fell {-100 * drift:.1f}% from the first to the last window "
                                   "(other load on a shared machine also causes this)",
            details={"first_window_samples_per_s": rates[0], "last_window_samples_per_s": rates[-1]}))
    throttle = throttling_from_history(reader.points, result.windows)
    name = "Clock stability under sustained load (throttling)"
    if ctx.sampler is None:
        items.append(Item.skipped("EV-9.sustained.throttling", CLAUSE, name, unit="%",
                                  reason="no telemetry sampler was running for this evaluation"))
    elif throttle.clock_ratio is None:
        items.append(Item.skipped("EV-9.sustained.throttling", CLAUSE, name, unit="%",
                                  reason=throttle.reason or "no clock reading"))
    else:
        ok = not throttle.throttled
        temps = [t for t in throttle.window_max_temperature_c if t is not None]
        series = {"x": mids, "y": list(throttle.window_median_mhz), "x_label": "time (s)",
                  "y_label": f"median {throttle.clock_domain} clock per window (MHz)"}
        items.append(Item.measured(
            "EV-9.sustained.throttling", CLAUSE, name, value=100.0 * throttle.clock_ratio, unit="%",
            method=f"telemetry sampler's {throttle.clock_domain} clock, {throttle.clock_samples} samples over the "
                   f"load: lowest window median / highest window median; below {100 * MIN_CLOCK_RATIO:g}% is "
                   "throttling", repeats=throttle.clock_samples, status="pass" if ok else "fail",
            reason=None if ok else f"the median clock fell to {100 * throttle.clock_ratio:.1f}% of the best window's",
            details={"throttle": throttle.to_dict(), "series": series,
                     "max_temperature_c": max(temps) if temps else None}))
    items += energy_items("EV-7.sustained", result.samples_per_s, "samples/s", energy.reading)
    ctx.progress("done", done=duration, total=duration)
    return items


@contextlib.contextmanager
def _deterministic_torch(enabled: bool) -> Iterator[None]:
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled  # benchmark mode may pick different kernels run to run
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@task("EV-9.integrity", clause=CLAUSE, title="Determinism, silent data corruption, recovery after failure",
      est_s={"quick": 25, "standard": 90, "full": 400}, device_kinds=("cpu", "cuda"))
def measure_integrity(ctx: EvalContext) -> list[Item]:
    """Determinism across runs and sessions, a repeated-GEMM SDC check, recovery after failed jobs."""
    import torch

    kind = getattr(ctx.device, "kind", "cpu")
    repeats = ctx.pick(quick=20, standard=100, full=1000)
    sessions = ctx.pick(quick=2, standard=3, full=5)
    ctx.progress("determinism", done=0, total=3)
    job = model_job(ctx.device, threads=ctx.threads, batch=1, seed=ctx.seed)
    items: list[Item] = []
    # CPU: as configured. GPU: deterministic algorithms off (cudnn.benchmark free to pick any kernel), then on.
    settings = [("default", None)] if kind != "cuda" else [("deterministic algorithms off", False),
                                                           ("deterministic algorithms on", True)]
    reference = None
    for label, flag in settings:
        guard = _deterministic_torch(flag) if flag is not None else contextlib.nullcontext()
        with guard, job.open() as rt:
            def fresh_run() -> Mapping[str, np.ndarray]:
                with job.open() as other:
                    return other.run(job.feeds)

            result = check_determinism(lambda rt=rt: rt.run(job.feeds), repeats=repeats,
                                       fresh=[fresh_run] * sessions)
            if reference is None:
                reference = _run_output(rt, job)
        suffix = ".deterministic_algorithms" if flag else ""
        method = (f"{job.describe()}: the same seeded input {repeats} times through one session and once "
                  f"through each of {sessions} fresh sessions, compared bitwise with the first run"
                  + (" (torch.use_deterministic_algorithms(True, warn_only=True), cudnn.deterministic, "
                     "cudnn.benchmark off, CUBLAS_WORKSPACE_CONFIG=:4096:8 unless set)" if flag else
                     " (use_deterministic_algorithms(False), cudnn.benchmark on)" if kind == "cuda" else ""))
        worst = max(result.max_abs_diff, result.session_max_abs_diff)
        items.append(Item.measured(
            f"EV-9.determinism{suffix}", CLAUSE, f"Determinism, {label}" if kind == "cuda" else "Determinism",
            value=worst, unit="max abs diff", method=method, repeats=repeats + sessions,
            status="pass" if result.deterministic else "fail",
            reason=None if result.deterministic else
            f"{result.runs - result.identical_runs} of {result.runs} runs and {result.sessions - result.identical_sessions} "
            f"of {result.sessions} fresh sessions differ from the first run (max abs diff {worst:.3g})",
            details={"determinism": result.to_dict(), "higher_is_better": False, "timed": False}))

    ctx.progress("silent data corruption: repeated GEMM", done=1, total=3)
    device = torch.device("cuda", ctx.device.index) if kind == "cuda" else torch.device("cpu")
    size = ctx.pick(quick=1024, standard=2048, full=2048) if kind == "cpu" else 4096
    sdc_repeats = ctx.pick(quick=60, standard=300, full=2000) if kind == "cpu" else ctx.pick(
        quick=500, standard=2000, full=10000)
    threads = ctx.threads if kind == "cpu" else None
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        sdc = gemm_sdc(size=size, repeats=sdc_repeats, device=device, seed=ctx.seed,
                       progress=lambda text="", *, done=0, total=1: ctx.progress(
                           text, done=1 + (done or 0) / (total or 1), total=3))
    finally:
        torch.set_num_threads(before)
    sdc_ok = sdc.beyond_bound == 0
    items.append(Item.measured(
        "EV-9.sdc", CLAUSE, "Silent data corruption: GEMM results beyond the FP32 rounding bound",
        value=sdc.beyond_bound, unit="elements", repeats=sdc.repeats,
        method=(f"torch.matmul FP32 (TF32 off) of fixed seeded {size}x{size} matrices in [-1, 1] on {device}, "
                f"{sdc.repeats} times; each result compared with one float64 host reference: an element farther "
                f"than (K + 2) * 2^-24 * (|A| @ |B|) is corrupt ({sdc.elements_checked:,} elements checked); "
                f"{sdc.repeats_bitwise_different} repeat(s) not bitwise equal to the first"),
        status="pass" if sdc_ok else "fail",
        reason=None if sdc_ok else f"{sdc.beyond_bound} element(s) in {sdc.repeats_with_errors} repeat(s) beyond the bound",
        details={"sdc": sdc.to_dict(), "higher_is_better": False, "timed": False}))

    ctx.progress("recovery after failed jobs", done=2, total=3)
    assert reference is not None
    with job.open() as rt:
        cases = recovery_checks(lambda: _run_output(rt, job), reference, device=ctx.device)
    recovered = sum(c.recovered for c in cases)
    bad = [c for c in cases if not c.recovered]
    items.append(Item.measured(
        "EV-9.recovery", CLAUSE, "Recovery after a failed job", value=recovered, unit=f"of {len(cases)} failures",
        repeats=len(cases),
        method=("each failure provoked on purpose, then the next job on the same device ("
                f"{job.describe()}) must run and match its earlier output within {OUTPUT_TOLERANCE:g} x range: "
                + "; ".join(c.failure for c in cases)),
        status="pass" if not bad else "fail",
        reason=None if not bad else "; ".join(
            f"{c.failure}: " + ("did not fail as provoked" if not c.failed_as_expected else c.detail or "next job failed")
            for c in bad),
        details={"cases": [c.to_dict() for c in cases], "timed": False,
                 "table": {"columns": ["failure provoked", "failed", "error", "next job ok", "max abs diff", "detail"],
                           "rows": [[c.failure, c.failed_as_expected, c.error, c.next_job_ok,
                                     c.next_job_max_abs_diff, c.detail] for c in cases]}}))
    ctx.progress("done", done=3, total=3)
    return items
