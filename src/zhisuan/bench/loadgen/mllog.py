"""Reading LoadGen's ``:::MLLOG`` detail log into a :class:`LoadGenSummary` of one run.

>>> from zhisuan.bench.loadgen.mllog import LoadGenSummary, parse_mllog
>>> text = ':::MLLOG {"key": "result_validity", "value": "VALID", "metadata": {}}'
>>> LoadGenSummary.from_entries(parse_mllog(text)).valid
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhisuan.errors import InternalError
from zhisuan.results import Record

__all__ = ["LoadGenSummary", "parse_mllog", "read_mllog"]


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


def read_mllog(log_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of ``<log_dir>/mlperf_log_detail.txt`` (zhisuan keeps LoadGen's default log prefix)."""
    path = Path(log_dir) / "mlperf_log_detail.txt"
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
class LoadGenSummary(Record):
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
        d = super().to_dict()
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
