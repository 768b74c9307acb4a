"""MLPerf LoadGen driver: any zhisuan runtime under the four scenarios, auto-calibrated (EV-5).

LoadGen (PyPI ``mlcommons-loadgen``, imported as ``mlperf_loadgen``) decides *when* queries are
issued and measures every latency; this module is the system under test (SUT) and the query
sample library (QSL) around a :class:`~zhisuan.runtime.base.Runtime`, plus what LoadGen leaves
to its users and they get wrong most often: the expected latency / QPS settings. The flow:

1. :class:`SampleSet` holds the samples (random from the signature, ``.npz`` files, or a zoo
   model's evaluation inputs), all in memory; :class:`BatchRunner` turns a list of sample
   indices into one real batch (concatenated along the batch axis, padded where a padding rule
   says so) or runs them one by one when the model has a fixed batch size.
2. :func:`calibrate` times real batches of 1, 2, 4, ... samples.
3. :func:`plan_scenario` (a pure function) turns those numbers into LoadGen settings that make
   the run VALID the first time: expected latency / QPS, samples per query, the Server QPS under
   its latency bound, and query counts large enough for LoadGen's early-stopping rule.
4. :func:`run_loadgen` runs LoadGen and :func:`parse_mllog` reads its ``:::MLLOG`` detail log.
   If LoadGen still says INVALID, :func:`adjust_plan` corrects the settings once from LoadGen's
   own reported numbers and the scenario runs again; both attempts are recorded.

These are not official MLPerf results: the minimum duration is short (official: 600 s), the
settings are calibrated here rather than fixed by the rules, and nothing is audited.

>>> from zhisuan.bench.loadgen import parse_mllog, LoadGenSummary
>>> text = ':::MLLOG {"key": "result_validity", "value": "VALID", "metadata": {}}'
>>> LoadGenSummary.from_entries(parse_mllog(text)).valid
True
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zhisuan.errors import BackendUnavailableError, InternalError, UserError
from zhisuan.runtime.base import TensorSpec

__all__ = [
    "BATCH_SIZES",
    "EARLY_STOPPING_MIN_QUERIES",
    "SCENARIOS",
    "BatchRunner",
    "BatchTiming",
    "BenchResult",
    "Calibration",
    "LoadGenRun",
    "LoadGenSettings",
    "LoadGenSummary",
    "SampleSet",
    "ScenarioPlan",
    "adjust_plan",
    "calibrate",
    "dynamic_batch",
    "import_loadgen",
    "measure_dispatch_ms",
    "npz_samples",
    "parse_mllog",
    "plan_scenario",
    "random_samples",
    "read_mllog",
    "run_loadgen",
    "run_scenario",
]

Scenario = Literal["singlestream", "multistream", "server", "offline"]
SCENARIOS: tuple[str, ...] = ("singlestream", "multistream", "server", "offline")
_LG_SCENARIO = {"singlestream": "SingleStream", "multistream": "MultiStream", "server": "Server", "offline": "Offline"}
_LG_MODE = {"performance": "PerformanceOnly", "accuracy": "AccuracyOnly"}

#: Batch sizes the calibration tries, as far as the model and ``max_batch`` allow.
BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
#: The most samples one run may hold when the model's batch axis is free (a sanity bound).
MAX_BATCH = 1 << 16

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
#: The calibration's LoadGen probe issues at most this many samples.
PROBE_MAX_SAMPLES = 4096
#: Expected latencies are set to this fraction of the measured one: LoadGen pre-generates
#: queries for twice the duration at the expected rate, so too low is harmless, too high INVALID.
EXPECTED_LATENCY_FRACTION = 0.5
OFFICIAL_NOTE = (
    "not an official MLPerf result: minimum duration {duration:g} s (MLPerf rules: 600 s), "
    "settings calibrated by zhisuan, no audit, samples held in memory"
)

Progress = Callable[[float, float, str], None]


def _no_progress(done: float, total: float, text: str = "") -> None:
    return None


def import_loadgen() -> Any:
    """The ``mlperf_loadgen`` module, or a BackendUnavailableError saying how to install it."""
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise BackendUnavailableError(
            "mlperf_loadgen", f"cannot import it ({exc})", "pip install mlcommons-loadgen  (or zhisuan[loadgen])"
        ) from None
    return mlperf_loadgen


# ---------------------------------------------------------------------------------------------
# The LoadGen detail log


def parse_mllog(text: str) -> list[dict[str, Any]]:
    """Every ``:::MLLOG {json}`` entry of a LoadGen log, in order (other lines are ignored).

    >>> parse_mllog(':::MLLOG {"key": "result_samples_per_second", "value": 12.5}')[0]["value"]
    12.5
    """
    entries = []
    for line in text.splitlines():
        start = line.find(":::MLLOG")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start + len(":::MLLOG") :])
        except json.JSONDecodeError:
            continue  # a line cut short (e.g. a killed run) is not an entry
        if isinstance(entry, dict) and "key" in entry:
            entries.append(entry)
    return entries


def read_mllog(log_dir: str | Path, prefix: str = "mlperf_log_") -> list[dict[str, Any]]:
    """The entries of ``<log_dir>/mlperf_log_detail.txt``."""
    path = Path(log_dir) / f"{prefix}detail.txt"
    try:
        return parse_mllog(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise InternalError(f"LoadGen wrote no detail log at {path}") from None


_PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


def _percentile_name(p: str) -> str:
    return "p" + p.rstrip("0").rstrip(".")  # "50.00" -> "p50", "99.90" -> "p99.9"


def _latencies(values: Mapping[str, Any], fmt: str, extremes: tuple[str, str, str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if extremes:
        for name, key in zip(("min", "max", "mean"), extremes, strict=True):
            if isinstance(values.get(key), int | float):
                out[name] = float(values[key])
    for p in _PERCENTILES:
        value = values.get(fmt.format(p=p))
        if isinstance(value, int | float):
            out[_percentile_name(p)] = float(value)
    return out


def _number(values: Mapping[str, Any], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class LoadGenSummary:
    """What LoadGen reported for one run, read from its ``:::MLLOG`` entries.

    Latencies are in nanoseconds as LoadGen logs them, keyed ``min``, ``max``, ``mean``, ``p50``,
    ``p90``, ``p95``, ``p97``, ``p99``, ``p99.9``. ``samples_per_s`` is the scenario's throughput
    figure: Offline ``result_samples_per_second``; Server completed samples/s; SingleStream QPS
    with LoadGen overhead; MultiStream samples per query / mean query latency (LoadGen reports no
    throughput for MultiStream).
    """

    scenario: str
    mode: str
    validity: str | None
    min_duration_met: bool | None
    min_queries_met: bool | None
    perf_constraints_met: bool | None
    early_stopping_met: bool | None
    early_stopping_result: str
    invalid_reason: str
    query_count: int | None
    samples_per_query: int | None
    samples_per_s: float | None
    scheduled_samples_per_s: float | None
    completed_samples_per_s: float | None
    latency_ns: dict[str, float]
    query_latency_ns: dict[str, float]
    first_token_latency_ns: dict[str, float]
    time_per_output_token_ns: dict[str, float]
    tokens_per_s: float | None
    early_stopping_latency_ns: float | None
    overlatency_query_count: int | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    effective: dict[str, Any]

    @property
    def valid(self) -> bool:
        return self.validity == "VALID"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["valid"] = self.valid
        d["errors"], d["warnings"] = list(self.errors), list(self.warnings)
        return d

    @classmethod
    def from_entries(cls, entries: Sequence[Mapping[str, Any]]) -> LoadGenSummary:
        values: dict[str, Any] = {}
        errors: list[str] = []
        warnings: list[str] = []
        for entry in entries:
            key, value = str(entry["key"]), entry.get("value")
            values[key] = value  # a repeated key (e.g. generic_message) keeps its last value
            meta = entry.get("metadata") or {}
            if meta.get("is_error"):
                errors.append(f"{key}: {value}")
            elif meta.get("is_warning"):
                warnings.append(f"{key}: {value}")
        scenario = str(values.get("effective_scenario") or values.get("requested_scenario") or "")
        spq = values.get("effective_samples_per_query")
        latency = _latencies(values, "result_{p}_percentile_latency_ns",
                             ("result_min_latency_ns", "result_max_latency_ns", "result_mean_latency_ns"))
        query_latency = _latencies(values, "result_{p}_percentile_per_query_latency_ns",
                                   ("result_min_query_latency_ns", "result_max_query_latency_ns",
                                    "result_mean_query_latency_ns"))
        completed = _number(values, "result_completed_samples_per_sec")
        if scenario == "Offline":
            throughput = _number(values, "result_samples_per_second")
        elif scenario == "Server":
            throughput = completed
        elif scenario == "SingleStream":
            throughput = _number(values, "result_qps_with_loadgen_overhead")
        elif scenario == "MultiStream" and query_latency.get("mean") and spq:
            throughput = float(spq) * 1e9 / query_latency["mean"]
        else:
            throughput = None
        es_latency = _number(values, "early_stopping_latency_ss") if scenario == "SingleStream" else (
            _number(values, "early_stopping_latency_ms") if scenario == "MultiStream" else None)
        tokens = _number(values, "result_tokens_per_second") or _number(values, "result_completed_tokens_per_second")
        es_text = " ".join(str(values.get(k) or "") for k in
                           ("early_stopping_result", "early_stopping_ttft_result", "early_stopping_tpot_result"))
        return cls(
            scenario=scenario,
            mode=str(values.get("effective_test_mode") or values.get("requested_test_mode") or ""),
            validity=values.get("result_validity"),
            min_duration_met=values.get("result_min_duration_met"),
            min_queries_met=values.get("result_min_queries_met"),
            perf_constraints_met=values.get("result_perf_constraints_met"),
            early_stopping_met=values.get("early_stopping_met"),
            early_stopping_result=" ".join(es_text.split()),
            invalid_reason=str(values.get("result_invalid_reason") or "").strip(),
            query_count=int(values["result_query_count"]) if isinstance(values.get("result_query_count"), int) else None,
            samples_per_query=int(spq) if isinstance(spq, int) else None,
            samples_per_s=throughput,
            scheduled_samples_per_s=_number(values, "result_scheduled_samples_per_sec"),
            completed_samples_per_s=completed,
            latency_ns=latency,
            query_latency_ns=query_latency,
            first_token_latency_ns=_latencies(values, "result_first_token_{p}_percentile_latency_ns",
                                              ("result_first_token_min_latency_ns", "result_first_token_max_latency_ns",
                                               "result_first_token_mean_latency_ns")),
            time_per_output_token_ns=_latencies(values, "result_time_per_output_token_{p}_percentile_ns",
                                                ("result_time_to_output_token_min", "result_time_to_output_token_max",
                                                 "result_time_to_output_token_mean")),
            tokens_per_s=tokens,
            early_stopping_latency_ns=es_latency,
            overlatency_query_count=values.get("result_overlatency_query_count"),
            errors=tuple(errors),
            warnings=tuple(warnings),
            effective={k[len("effective_"):]: v for k, v in values.items() if k.startswith("effective_")},
        )


def _queries_needed(early_stopping_result: str, query_count: int | None) -> int | None:
    """How many queries LoadGen's early-stopping message says a VALID run needs, if it says."""
    more = re.search(r"at least (\d+) more queries", early_stopping_result)
    if more and query_count is not None:
        return query_count + int(more.group(1))
    total = re.search(r"at least (\d+) (?:total )?queries", early_stopping_result)
    return int(total.group(1)) if total else None


# ---------------------------------------------------------------------------------------------
# Samples and batches


def dynamic_batch(specs: Sequence[TensorSpec]) -> bool:
    """Whether every input has a leading axis of free size, so samples concatenate along it."""
    return bool(specs) and all(
        len(s.shape) >= 1 and not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in specs
    )


@dataclass(frozen=True)
class SampleSet:
    """The query sample library's data: one feed per sample, all held in memory.

    With ``batch_axis`` every array has a leading axis of size 1 and samples are concatenated
    along it into batches; ``pad`` names inputs whose other axes differ between samples and how
    to pad them to the longest in a batch (``{"input_ids": (1, 0)}``: axis 1, value 0). Without
    ``batch_axis`` each feed is run on its own (a model with a fixed batch size).
    """

    feeds: tuple[Mapping[str, np.ndarray], ...]
    source: str
    batch_axis: bool = True
    pad: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.feeds:
            raise UserError("the sample set is empty")
        names = list(self.feeds[0])
        for i, feed in enumerate(self.feeds):
            if list(feed) != names:
                raise UserError(f"sample {i} has inputs {list(feed)}, sample 0 has {names}")
            if self.batch_axis and any(np.ndim(a) < 1 or np.shape(a)[0] != 1 for a in feed.values()):
                raise UserError(f"sample {i}: every input needs a leading batch axis of size 1")

    def __len__(self) -> int:
        return len(self.feeds)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.feeds[0])

    def uniform(self) -> bool:
        """Whether every sample has the same shape for every input."""
        first = {k: np.shape(v) for k, v in self.feeds[0].items()}
        return all({k: np.shape(v) for k, v in f.items()} == first for f in self.feeds[1:])

    def describe(self) -> dict[str, Any]:
        first = self.feeds[0]
        return {
            "source": self.source,
            "samples": len(self),
            "inputs": {k: {"dtype": v.dtype.name, "shape_of_first": list(v.shape)} for k, v in first.items()},
            "uniform_shapes": self.uniform(),
            "padding": {k: {"axis": a, "value": v} for k, (a, v) in self.pad.items()},
        }


def random_samples(
    specs: Sequence[TensorSpec],
    count: int,
    *,
    seed: int = 0,
    dim_values: Mapping[str, int] | None = None,
    batch_axis: bool | None = None,
) -> SampleSet:
    """``count`` seeded random samples for a signature (see :func:`zhisuan.runtime.feeds.random_feeds`)."""
    from zhisuan.runtime.feeds import random_feeds

    if count < 1:
        raise UserError(f"the number of random samples must be >= 1, got {count}")
    batched = dynamic_batch(specs) if batch_axis is None else batch_axis
    feeds = tuple(random_feeds(specs, batch=1, seed=seed + i, dim_values=dim_values) for i in range(count))
    sizes = ", ".join(f"{k}={v}" for k, v in (dim_values or {}).items())
    return SampleSet(feeds, f"random from the signature, seed {seed}" + (f", {sizes}" if sizes else ""), batched)


def npz_samples(path: str | Path, specs: Sequence[TensorSpec]) -> SampleSet:
    """Samples from an ``.npz`` file or a directory of them; with a dynamic batch axis, every row is a sample."""
    from zhisuan.runtime.feeds import load_feeds

    files = load_feeds(path, specs=specs)
    if not dynamic_batch(specs):
        return SampleSet(tuple(files), f"npz: {path} ({len(files)} feeds)", batch_axis=False)
    feeds: list[dict[str, np.ndarray]] = []
    for i, feed in enumerate(files):
        rows = {np.shape(v)[0] for v in feed.values()}
        if len(rows) != 1:
            raise UserError(f"{path}: feed {i} has inputs with different batch sizes {sorted(rows)}")
        n = rows.pop()
        feeds.extend({k: np.ascontiguousarray(v[r : r + 1]) for k, v in feed.items()} for r in range(n))
    if not feeds:
        raise UserError(f"{path}: the inputs hold no samples (batch size 0)")
    return SampleSet(tuple(feeds), f"npz: {path} ({len(feeds)} samples)", batch_axis=True)


class BatchRunner:
    """Runs lists of sample indices on a runtime as real batches.

    Samples are concatenated along the batch axis (padded per :attr:`SampleSet.pad`) when the
    model's batch axis is free; otherwise each sample runs on its own (``max_batch`` is 1).
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


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class BatchTiming:
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
        return {**asdict(self), "samples_per_s": self.samples_per_s, "peak_samples_per_s": self.peak_samples_per_s}


@dataclass(frozen=True)
class Calibration:
    """Measured latency and throughput per batch size; what :func:`plan_scenario` reads."""

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
    progress: Progress = _no_progress,
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
        progress(len(active), len(sizes) + 1, f"calibrating: warm-up at batch {b}")
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
        progress(len(sizes) * min(1.0, spent / budget), len(sizes) + 1, f"calibrating: round {round_ + 1}")
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
    progress(len(sizes) + 1, len(sizes) + 1, "calibrated")
    return Calibration(tuple(timings), clock() - start, runner.batchable, dispatch, probe_rate, probe_batch,
                       probe_count)


# ---------------------------------------------------------------------------------------------
# Settings and plans


@dataclass(frozen=True)
class LoadGenSettings:
    """The ``mlperf_loadgen.TestSettings`` fields zhisuan sets; everything else is LoadGen's default."""

    scenario: str
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
        if self.scenario not in SCENARIOS:
            raise UserError(f"unknown scenario {self.scenario!r}; choose one of: {', '.join(SCENARIOS)}")
        if self.mode not in _LG_MODE:
            raise UserError(f"unknown LoadGen mode {self.mode!r}; choose one of: {', '.join(_LG_MODE)}")

    def test_settings(self, lg: Any) -> Any:
        """The ``mlperf_loadgen.TestSettings`` object for these settings."""
        ts = lg.TestSettings()
        ts.scenario = getattr(lg.TestScenario, _LG_SCENARIO[self.scenario])
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
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ScenarioPlan:
    """LoadGen settings plus how the SUT batches, and why (``notes``)."""

    settings: LoadGenSettings
    batch: int  # Offline / Server: samples per batch at most; MultiStream: samples per chunk of a query
    max_delay_ms: float = 0.0  # Server: how long a worker waits to fill a batch
    expected_duration_s: float = 0.0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "batch": self.batch, "max_delay_ms": self.max_delay_ms,
                "expected_duration_s": self.expected_duration_s, "notes": list(self.notes)}


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
    scenario: str,
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
    if scenario not in SCENARIOS:
        raise UserError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    if min_duration_s <= 0:
        raise UserError(f"the minimum duration must be > 0 s, got {min_duration_s}")
    one = cal.timings[0]
    max_batch = batch if batch is not None else max(t.batch for t in cal.timings)
    duration_ms = round(min_duration_s * 1e3)
    notes: list[str] = []
    if scenario == "singlestream":
        expected = EXPECTED_LATENCY_FRACTION * one.min_ms
        settings = LoadGenSettings("singlestream", min_duration_ms=duration_ms,
                                   min_query_count=SINGLESTREAM_MIN_QUERIES,
                                   single_stream_expected_latency_ns=_ms_to_ns(expected), seed=seed)
        run_s = max(min_duration_s, SINGLESTREAM_MIN_QUERIES * one.p50_ms / 1e3)
        return ScenarioPlan(settings, 1, 0.0, run_s, (f"expected latency {expected:.3g} ms = "
                                                       f"{EXPECTED_LATENCY_FRACTION:g} x fastest batch-1 run "
                                                       f"{one.min_ms:.3g} ms",))
    if scenario == "multistream":
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
    if scenario == "server":
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
    over_bound = s.scenario == "server" and summary.perf_constraints_met is False
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
        if s.scenario == "offline" and summary.samples_per_s:
            changes["offline_expected_qps"] = round(1.3 * summary.samples_per_s, 4)
        elif s.scenario == "singlestream" and lat.get("mean"):
            changes["single_stream_expected_latency_ns"] = max(1, int(EXPECTED_LATENCY_FRACTION * lat["mean"]))
        elif s.scenario == "multistream" and summary.query_latency_ns.get("mean"):
            changes["multi_stream_expected_latency_ns"] = max(1, int(EXPECTED_LATENCY_FRACTION
                                                                      * summary.query_latency_ns["mean"]))
        elif s.scenario == "server" and s.server_target_qps and "server_target_qps" not in changes:
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
    if settings.scenario == "server" and settings.server_target_qps:
        expected = max(settings.min_duration_ms / 1e3, settings.min_query_count / settings.server_target_qps)
    elif settings.scenario == "offline" and settings.offline_expected_qps and summary.samples_per_s:
        expected = 1.1 * settings.min_duration_ms / 1e3 * settings.offline_expected_qps / summary.samples_per_s
    elif settings.scenario in ("singlestream", "multistream") and summary.query_count and plan.expected_duration_s:
        expected = plan.expected_duration_s * max(1.0, settings.min_query_count / summary.query_count)
    return replace(plan, settings=settings, expected_duration_s=expected, notes=(*plan.notes, *notes))


# ---------------------------------------------------------------------------------------------
# The system under test


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

    def __init__(self, lg: Any, runner: BatchRunner, scenario: str, *, batch: int, max_delay_s: float = 0.0,
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
        if scenario == "server":
            for i in range(max(1, workers)):
                thread = threading.Thread(target=self._worker, name=f"zhisuan-sut-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def issue_queries(self, query_samples: Sequence[Any]) -> None:
        if self.scenario == "server":
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
        if self.scenario == "offline" and self.runner.pads and len(samples) > self.batch:
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
    progress: Progress = _no_progress,
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
            progress(min(elapsed, expected * 0.99), expected, label or f"{settings.scenario} ({settings.mode})")

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
    progress(expected, expected, label or settings.scenario)
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


# ---------------------------------------------------------------------------------------------
# One scenario, calibrated, with one corrective rerun


@dataclass(frozen=True)
class BenchResult:
    """One LoadGen scenario on one model: the figures, the settings behind them and how they were chosen.

    ``samples_per_s`` is the scenario's throughput (see :class:`LoadGenSummary`); latencies are
    per sample as LoadGen measured them (from the query's scheduled time to its completion).
    ``attempts`` holds every run (the second only when the first was INVALID).
    """

    model: str
    scenario: str
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attempts"] = list(self.attempts)
        d["notes"] = list(self.notes)
        return d


def run_scenario(
    runner: BatchRunner,
    calibration: Calibration,
    scenario: str,
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
    progress: Progress = _no_progress,
) -> tuple[BenchResult, Any]:
    """Plan ``scenario`` from ``calibration``, run it, and rerun once with adjusted settings if INVALID.

    The rerun is skipped (and the result stays INVALID, saying why) when its settings would make
    it last longer than ``max_rerun_s``. ``window`` (e.g. ``lambda: energy_window(ctx)``) wraps
    each performance run; the window of the reported run is returned with the result.
    """
    start = time.perf_counter()
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
        qps=s.scheduled_samples_per_s if scenario == "server" else None,
        target_latency_ms=bound / 1e6 if scenario == "server" and bound else None,
        query_latency_ms={k: v / 1e6 for k, v in s.query_latency_ns.items()},
        samples_per_query=plan.settings.multi_stream_samples_per_query if scenario == "multistream" else None,
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
