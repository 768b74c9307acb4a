"""The short calibration run: real batches of 1, 2, 4, ... samples timed, to size LoadGen from.

:func:`calibrate` times each batch size with the exact call the SUT makes, measures the hand-over
to a Server worker thread, and (optionally) runs a short LoadGen Offline probe for the whole
path's rate; the :class:`Calibration` it returns is what
:func:`~zhisuan.bench.loadgen.plan.plan_scenario` reads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zhisuan.bench.loadgen.plan import LoadGenSettings, ScenarioPlan
from zhisuan.bench.loadgen.sut import BatchRunner, run_loadgen
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

__all__ = [
    "BATCH_SIZES",
    "PROBE_MAX_SAMPLES",
    "BatchTiming",
    "Calibration",
    "calibrate",
    "measure_dispatch_ms",
]

#: Batch sizes the calibration tries, as far as the model and ``max_batch`` allow.
BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
#: The calibration's LoadGen probe issues at most this many samples.
PROBE_MAX_SAMPLES = 4096


@dataclass(frozen=True)
class BatchTiming(Record):
    """Wall time of one batch size, measured around the same call the SUT makes."""

    batch: int
    repeats: int
    p50_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float

    @property
    def samples_per_s(self) -> float:
        """Typical throughput: batch / p50 latency."""
        return self.batch * 1e3 / self.p50_ms

    @property
    def peak_samples_per_s(self) -> float:
        """Throughput of the fastest repeat: what a run may reach when nothing disturbs it."""
        return self.batch * 1e3 / self.min_ms

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "samples_per_s": self.samples_per_s, "peak_samples_per_s": self.peak_samples_per_s}


@dataclass(frozen=True)
class Calibration:
    """Measured latency and throughput per batch size; what the planner reads
    (:func:`~zhisuan.bench.loadgen.plan.plan_scenario`)."""

    timings: tuple[BatchTiming, ...]
    duration_s: float
    batchable: bool
    dispatch_ms: float = 0.0  # median hand-over of a sample to a worker thread and back (Server SUT)
    probe_samples_per_s: float | None = None  # a short LoadGen Offline run: the whole SUT path, overhead included
    probe_batch: int | None = None
    probe_samples: int | None = None

    def __post_init__(self) -> None:
        if not self.timings or self.timings[0].batch != 1:
            raise UserError("a calibration needs a timing of batch size 1 first")

    def timing(self, batch: int) -> BatchTiming | None:
        return next((t for t in self.timings if t.batch == batch), None)

    @property
    def best(self) -> BatchTiming:
        """The batch size with the highest throughput of its fastest run.

        The fastest run is what a batch size does undisturbed; on a shared machine the p50 of a
        few repeats mixes in other jobs' load and would pick a batch size by chance.
        """
        return max(self.timings, key=lambda t: t.peak_samples_per_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timings": [t.to_dict() for t in self.timings],
            "best_batch": self.best.batch,  # by the fastest run of each size
            "batchable": self.batchable,
            "dispatch_ms": self.dispatch_ms,
            "probe": {"samples_per_s": self.probe_samples_per_s, "batch": self.probe_batch,
                      "samples": self.probe_samples, "sut_limited": self.sut_limited},
            "duration_s": self.duration_s,
        }

    @property
    def sut_limited(self) -> bool:
        """Whether LoadGen and the SUT, not the model, limit throughput (the probe ran at less
        than half the model-only rate: a model of microseconds per sample)."""
        if self.probe_samples_per_s is None or self.probe_batch is None:
            return False
        timing = self.timing(self.probe_batch)
        return timing is not None and self.probe_samples_per_s < 0.5 * timing.samples_per_s

    def server_rate(self, timing: BatchTiming) -> float:
        """Samples/s a Server worker can sustain at ``timing``'s batch size, hand-over included
        (never more than the LoadGen probe reached)."""
        rate = timing.batch * 1e3 / (timing.p50_ms + self.dispatch_ms)
        return min(rate, self.probe_samples_per_s) if self.probe_samples_per_s else rate


def measure_dispatch_ms(repeats: int = 200) -> float:
    """Median time to hand one item to a waiting worker thread and get the answer back.

    That is the queueing overhead the Server SUT adds to every batch (a Condition notify, a
    thread wake-up and a reply), measured here rather than assumed.
    """
    cond = threading.Condition()
    box: deque[float] = deque()
    answers: deque[float] = deque()
    stop = False

    def worker() -> None:
        while True:
            with cond:
                while not box and not stop:
                    cond.wait()
                if stop:
                    return
                box.popleft()
                answers.append(time.perf_counter())
                cond.notify_all()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    times = []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            with cond:
                box.append(t0)
                cond.notify_all()
                while not answers:
                    cond.wait()
                answers.popleft()
            times.append(time.perf_counter() - t0)
    finally:
        with cond:
            stop = True
            cond.notify_all()
        thread.join(timeout=5)
    return float(np.median(times) * 1e3)


def calibrate(
    runner: BatchRunner,
    *,
    batch_sizes: Sequence[int] | None = None,
    min_time_s: float = 0.5,
    min_repeats: int = 3,
    max_repeats: int = 50,
    max_batch_latency_s: float = 2.0,
    loadgen_probe: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    progress: Progress = no_progress,
) -> Calibration:
    """Time real batches of each size, interleaved, with the exact call the SUT makes.

    Each size gets one warm-up run (sizes go up from 1 and stop after the first whose warm-up
    takes longer than ``max_batch_latency_s``); then rounds time one batch of every size in
    turn until each has ``min_repeats`` runs and ``min_time_s`` per size has been spent (at most
    ``max_repeats`` rounds). Interleaving makes a change in machine load hit every size alike,
    so the comparison between sizes holds on a shared machine. Batches cycle through the
    samples so that samples of different sizes all take part. Then the hand-over to a worker
    thread is timed (:func:`measure_dispatch_ms`) and, with ``loadgen_probe``, a short LoadGen
    Offline run (about 0.3 s at the best batch size) measures the whole path, LoadGen's own
    per-sample work included.
    """
    sizes = sorted({1, *(batch_sizes or BATCH_SIZES)})
    sizes = [b for b in sizes if b >= 1 and (b == 1 or runner.batchable)]
    start = clock()
    n = len(runner.samples)
    active: list[int] = []
    for b in sizes:
        progress(f"calibrating: warm-up at batch {b}", done=len(active), total=len(sizes) + 1)
        t0 = clock()
        runner.run([j % n for j in range(b)])  # warm-up: first-run allocations
        active.append(b)
        if clock() - t0 > max_batch_latency_s:
            break
    times: dict[int, list[float]] = {b: [] for b in active}
    offsets = dict.fromkeys(active, 0)
    spent = 0.0
    budget = min_time_s * len(active)
    for round_ in range(max_repeats):
        for b in active:
            offsets[b] += b
            indices = [(offsets[b] + j) % n for j in range(b)]
            t0 = clock()
            runner.run(indices)
            dt = clock() - t0
            times[b].append(dt)
            spent += dt
        progress(f"calibrating: round {round_ + 1}", done=len(sizes) * min(1.0, spent / budget),
                 total=len(sizes) + 1)
        if round_ + 1 >= min_repeats and spent >= budget:
            break
    timings: list[BatchTiming] = []
    for b in active:
        ms = np.asarray(times[b]) * 1e3
        timings.append(BatchTiming(b, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                                   float(ms.min()), float(ms.max())))
    dispatch = measure_dispatch_ms()
    probe_rate = probe_batch = probe_count = None
    if loadgen_probe:
        best = max(timings, key=lambda t: t.peak_samples_per_s)
        probe_count = int(min(PROBE_MAX_SAMPLES, max(2 * best.batch, len(runner.samples), 0.3 * best.samples_per_s)))
        plan = ScenarioPlan(LoadGenSettings("offline", min_duration_ms=0, min_query_count=probe_count,
                                            offline_expected_qps=1.0), best.batch, 0.0, 0.3, ("calibration probe",))
        probe = run_loadgen(runner, plan, label="calibrating: LoadGen probe")
        if probe.sut_errors:
            raise UserError(f"the model failed during calibration: {probe.sut_errors[0]}")
        probe_rate, probe_batch = probe.summary.samples_per_s, best.batch
    progress("calibrated", done=len(sizes) + 1, total=len(sizes) + 1)
    return Calibration(tuple(timings), clock() - start, runner.batchable, dispatch, probe_rate, probe_batch,
                       probe_count)
