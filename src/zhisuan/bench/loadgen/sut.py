"""The system under test: real batches on a runtime, answered to LoadGen, and one LoadGen run over them.

:class:`BatchRunner` turns a list of sample indices into one real batch (concatenated along the
batch axis, padded where a padding rule says so), or runs samples one by one when the model has
a fixed batch size. ``_Sut`` answers LoadGen's IssueQuery / FlushQueries with it: inline for
Offline, SingleStream and MultiStream, through a queue and worker threads for Server.
:func:`run_loadgen` runs LoadGen once with a :class:`~zhisuan.bench.loadgen.plan.ScenarioPlan`
over a runner and reads back what LoadGen logged.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.bench.loadgen.mllog import LoadGenSummary, read_mllog
from zhisuan.bench.loadgen.plan import Scenario, ScenarioPlan
from zhisuan.bench.loadgen.samples import SampleSet, dynamic_batch
from zhisuan.errors import BackendUnavailableError, InternalError, UserError
from zhisuan.progress import Progress, no_progress

__all__ = ["MAX_BATCH", "BatchRunner", "LoadGenRun", "import_loadgen", "run_loadgen"]


#: The most samples one run may hold when the model's batch axis is free (a sanity bound).
MAX_BATCH = 1 << 16

def import_loadgen() -> Any:
    """The ``mlperf_loadgen`` module, or a BackendUnavailableError saying how to install it."""
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise BackendUnavailableError(
            "mlperf_loadgen", f"cannot import it ({exc})", "pip install mlcommons-loadgen  (or zhisuan[loadgen])"
        ) from None
    return mlperf_loadgen


class BatchRunner:
    """Runs lists of sample indices on a runtime as real batches.

    Samples are concatenated along the batch axis (padded per
    :attr:`~zhisuan.bench.loadgen.samples.SampleSet.pad`) when the model's batch axis is free;
    otherwise each sample runs on its own (``max_batch`` is 1).
    Uniform samples are stacked once up front, so gathering a batch is one indexed copy.
    """

    def __init__(self, runtime: Any, samples: SampleSet, *, output_names: Sequence[str] | None = None) -> None:
        self.runtime = runtime
        self.samples = samples
        self.output_names = list(output_names) if output_names else [s.name for s in runtime.outputs()]
        inputs = runtime.inputs()
        if {s.name for s in inputs} != set(samples.input_names):
            raise UserError(f"the samples' inputs {list(samples.input_names)} do not match the model's "
                            f"{[s.name for s in inputs]}")
        self.notes: list[str] = []
        self._stacked: dict[str, np.ndarray] | None = None
        batchable = samples.batch_axis and dynamic_batch(inputs)
        if batchable and samples.uniform():
            self._stacked = {k: np.concatenate([f[k] for f in samples.feeds]) for k in samples.input_names}
        elif batchable:
            uneven = [k for k in samples.input_names
                      if len({np.shape(f[k]) for f in samples.feeds}) > 1 and k not in samples.pad]
            if uneven:
                batchable = False
                self.notes.append(f"samples differ in shape for {uneven} and there is no padding rule: "
                                  "each sample runs on its own")
        elif not dynamic_batch(inputs):
            self.notes.append("the model has a fixed batch size (or scalar inputs): each sample is one feed "
                              "and runs on its own")
        self.batchable = batchable
        self.max_batch = MAX_BATCH if batchable else 1

    def feeds(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The inputs of one batch of samples."""
        if not self.batchable:
            if len(indices) != 1:
                raise InternalError("a model without a free batch axis runs one sample at a time")
            return dict(self.samples.feeds[indices[0]])
        if self._stacked is not None:
            if len(indices) == 1:
                i = indices[0]
                return {k: v[i : i + 1] for k, v in self._stacked.items()}
            idx = np.asarray(indices, dtype=np.intp)
            return {k: v[idx] for k, v in self._stacked.items()}
        parts = [self.samples.feeds[i] for i in indices]
        batch = {}
        for name in self.samples.input_names:
            arrays = [p[name] for p in parts]
            if name in self.samples.pad:
                axis, value = self.samples.pad[name]
                longest = max(a.shape[axis] for a in arrays)
                arrays = [_pad_to(a, axis, longest, value) for a in arrays]
            batch[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        return batch

    def run(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Outputs of one batch (``len(indices) <= max_batch``)."""
        return self.runtime.run(self.feeds(indices), self.output_names)

    def split(self, outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
        """Per-sample rows of a batch's outputs (an output without the batch axis is shared)."""
        if not self.batchable:
            return [dict(outputs)]
        rows: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
        for name, value in outputs.items():
            array = np.asarray(value)
            for i in range(count):
                rows[i][name] = array[i : i + 1].copy() if array.ndim and array.shape[0] == count else array
        return rows

    @property
    def pads(self) -> bool:
        """Whether batches are padded (samples of different lengths are batched together)."""
        return self.batchable and self._stacked is None

    def length(self, index: int) -> int:
        """A sample's size along its padded axes (what padding a batch to its longest costs)."""
        feed = self.samples.feeds[index]
        return sum(int(feed[name].shape[axis]) for name, (axis, _) in self.samples.pad.items() if name in feed)

    def chunks(self, indices: Sequence[int], batch: int) -> Iterator[list[int]]:
        step = max(1, min(batch, self.max_batch))
        for start in range(0, len(indices), step):
            yield list(indices[start : start + step])


def _pad_to(array: np.ndarray, axis: int, size: int, value: float) -> np.ndarray:
    missing = size - array.shape[axis]
    if missing <= 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array, widths, constant_values=value)


@dataclass
class _Pending:
    sample: Any
    arrival_s: float


class _Sut:
    """IssueQuery / FlushQueries for LoadGen over a :class:`BatchRunner`.

    Offline, SingleStream and MultiStream run inside IssueQuery (LoadGen issues the next query
    only after this one completes, so nothing is gained by a thread). Offline sorts the query's
    samples by length first when batches are padded, so each batch pads little. Server queues samples;
    worker threads take up to ``batch`` of them, waiting at most ``max_delay_s`` for a batch to
    fill, run them and complete them.
    """

    def __init__(self, lg: Any, runner: BatchRunner, scenario: Scenario, *, batch: int, max_delay_s: float = 0.0,
                 collect: bool = False, workers: int = 1) -> None:
        self.lg = lg
        self.runner = runner
        self.scenario = scenario
        self.batch = max(1, batch)
        self.max_delay_s = max_delay_s
        self.collect = collect
        self.responses: dict[int, dict[str, np.ndarray]] = {}
        self.errors: list[str] = []
        self.completed = 0
        self.batches = 0
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._flushed = False
        self._threads: list[threading.Thread] = []
        if scenario == Scenario.SERVER:
            for i in range(max(1, workers)):
                thread = threading.Thread(target=self._worker, name=f"zhisuan-sut-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def issue_queries(self, query_samples: Sequence[Any]) -> None:
        if self.scenario == Scenario.SERVER:
            now = time.perf_counter()
            with self._cond:
                self._queue.extend(_Pending(s, now) for s in query_samples)
                self._cond.notify()
            return
        self._process(list(query_samples))

    def flush_queries(self) -> None:
        with self._cond:
            self._flushed = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                if self.max_delay_s > 0 and len(self._queue) < self.batch:
                    deadline = self._queue[0].arrival_s + self.max_delay_s
                    while len(self._queue) < self.batch and not (self._stopping or self._flushed):
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                take = [self._queue.popleft().sample for _ in range(min(self.batch, len(self._queue)))]
            self._process(take)

    def _process(self, samples: list[Any]) -> None:
        if self.scenario == Scenario.OFFLINE and self.runner.pads and len(samples) > self.batch:
            # Offline may reorder: batch samples of similar length to pad less (as BERT Offline SUTs do)
            samples = sorted(samples, key=lambda s: self.runner.length(s.index))
        for chunk in self.runner.chunks(samples, self.batch):
            self._run_chunk(chunk)

    def _run_chunk(self, chunk: list[Any]) -> None:
        lg = self.lg
        try:
            outputs = self.runner.run([s.index for s in chunk])
        except Exception as exc:  # never let an exception cross into LoadGen's C++ thread
            self.errors.append(f"{type(exc).__name__}: {exc}")
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in chunk])
            self.completed += len(chunk)
            return
        self.batches += 1
        if not self.collect:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in chunk])
        else:
            rows = self.runner.split(outputs, len(chunk))
            keep = []
            responses = []
            for s, row in zip(chunk, rows, strict=True):
                self.responses[s.index] = row
                # LoadGen copies the first output's bytes into mlperf_log_accuracy.json
                data = np.ascontiguousarray(row[self.runner.output_names[0]])
                keep.append(data)
                responses.append(lg.QuerySampleResponse(s.id, data.ctypes.data, data.nbytes))
            lg.QuerySamplesComplete(responses)
            del keep
        self.completed += len(chunk)


@dataclass(frozen=True)
class LoadGenRun:
    """One LoadGen run: its settings, what LoadGen reported, and the SUT's side of it."""

    plan: ScenarioPlan
    summary: LoadGenSummary
    log_dir: Path | None
    wall_s: float
    batches: int
    sut_errors: tuple[str, ...]
    responses: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    accuracy_log_entries: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.plan.to_dict(),
            "result_validity": self.summary.validity,
            "valid": self.summary.valid,
            "invalid_reason": self.summary.invalid_reason or None,
            "early_stopping": self.summary.early_stopping_result or None,
            "samples_per_s": self.summary.samples_per_s,
            "p99_latency_ms": _ms(self.summary.latency_ns.get("p99")),
            "query_count": self.summary.query_count,
            "wall_s": self.wall_s,
            "batches": self.batches,
            "sut_errors": list(self.sut_errors),
            "loadgen_errors": list(self.summary.errors),
            "log_dir": str(self.log_dir) if self.log_dir else None,
        }


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def run_loadgen(
    runner: BatchRunner,
    plan: ScenarioPlan,
    *,
    log_dir: str | Path | None = None,
    collect: bool = False,
    workers: int = 1,
    progress: Progress = no_progress,
    label: str = "",
) -> LoadGenRun:
    """Run LoadGen once with ``plan`` over ``runner``; logs go to ``log_dir`` (else a temporary dir).

    LoadGen writes its logs into a fresh directory next to ``log_dir`` that is renamed into
    place when the run ends, so ``log_dir`` never holds a half-written run. ``collect`` keeps
    every sample's outputs (accuracy mode) and hands the first output's bytes to LoadGen, which
    writes them to ``mlperf_log_accuracy.json``.
    """
    lg = import_loadgen()
    settings = plan.settings
    n = len(runner.samples)
    keep_logs = log_dir is not None
    if keep_logs:
        final = Path(log_dir)  # type: ignore[arg-type]
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    else:
        final = None
        work = Path(tempfile.mkdtemp(prefix="zhisuan-loadgen-"))
    sut_impl = _Sut(lg, runner, settings.scenario, batch=plan.batch, max_delay_s=plan.max_delay_ms / 1e3,
                    collect=collect, workers=workers)
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl = lg.ConstructQSL(n, n, lambda _indices: None, lambda _indices: None)  # samples are already in memory
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(work)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    expected = max(plan.expected_duration_s, 0.1)
    done = threading.Event()

    def tick() -> None:
        t0 = time.perf_counter()
        while not done.wait(0.25):
            elapsed = time.perf_counter() - t0
            progress(label or f"{settings.scenario} ({settings.mode})", done=min(elapsed, expected * 0.99),
                     total=expected)

    ticker = threading.Thread(target=tick, name="zhisuan-loadgen-progress", daemon=True)
    ticker.start()
    start = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings.test_settings(lg), log_settings)
    finally:
        wall = time.perf_counter() - start
        done.set()
        sut_impl.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        ticker.join(timeout=5)
    progress(label or settings.scenario, done=expected, total=expected)
    summary = LoadGenSummary.from_entries(read_mllog(work))
    accuracy_entries = None
    if settings.mode == "accuracy":
        accuracy_entries = _count_accuracy_entries(work / "mlperf_log_accuracy.json")
    if final is not None:
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return LoadGenRun(plan, summary, final, wall, sut_impl.batches, tuple(sut_impl.errors),
                      sut_impl.responses, accuracy_entries)


def _count_accuracy_entries(path: Path) -> int | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "[]")
    except (OSError, json.JSONDecodeError):
        return None
    return len(data) if isinstance(data, list) else None
