"""The evaluation report's data model: one flat list of measured items plus the environment.

Every figure zhisuan reports is an :class:`Item`: what was measured (``id``, ``clause``, ``name``),
the value and its unit, how (``method``), how often (``repeats``) and how much it varied
(``spread``), and whether it passed. A skipped or failed item always says why.

>>> from zhisuan.bench.schema import Item, spread_of
>>> item = Item.measured(
...     "EV-2.gemm.fp32", "EV-2", "Dense GEMM FP32", value=120.5, unit="GFLOP/s",
...     method="torch.matmul 2048x2048, median of 7", samples=[118.0, 120.5, 121.0],
...     reference=150.0,
... )
>>> item.status, round(item.ratio_to_reference, 3)
('pass', 0.803)
>>> Item.skipped("EV-3.h2d.pinned", "EV-3", "Host to device, pinned", reason="no GPU").status
'skip'

Conventions for ``Item.details`` (the report's HTML and ``zhisuan report compare`` read them):

``details["series"]``
    Plot data: one dict, or a list of dicts drawn on the same axes::

        {"x": [1024, 4096, ...], "y": [0.8, 2.1, ...],          # equal lengths, numbers
         "x_label": "message size (bytes)", "y_label": "busbw (GB/s)",
         "label": "all-reduce",                                 # legend entry (optional)
         "kind": "line",                                        # "line" (default), "bar" or "scatter"
         "log_x": True, "log_y": False,                         # optional axis scales
         "hline": {"y": 42.0, "label": "peak"}}                 # optional reference line

    ``x`` may hold strings (categories) for ``kind="bar"``. Each item with a series gets its own
    plot in its clause's section.
``details["higher_is_better"]``
    ``True`` / ``False``: the sense of the figure for comparisons. Without it the sense comes from
    the unit (see :func:`higher_is_better`); units that say nothing (``%``, ``count``) are neutral.
``details["key"]``
    ``True`` marks a headline figure for the summary table of its clause (otherwise the first
    numeric items are shown).
``details["timed"]``
    ``False`` marks a check of a timed clause whose verdict no other job can change (results
    that are wrong, an accuracy below its reference): its ``fail`` stays a ``fail`` under
    interference. Items of EV-1, EV-8, EV-10 and EV-11 are never timed.

Values that are not JSON (numpy scalars, tuples, NaN) are made plain by :func:`plain_json`
before a report is saved; NaN and infinities become ``None``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from zhisuan.errors import UserError
from zhisuan.results import Record

SCHEMA_VERSION = "1.1"  # 1.1: status "disturbed" and Item.interference
CLAUSES = tuple(f"EV-{i}" for i in range(1, 12))
Status = Literal["pass", "fail", "skip", "disturbed"]
#: ``disturbed``: the check failed while other jobs took the machine (see
#: :mod:`zhisuan.bench.interference`); the figure is kept, it is not a failure of the device.
STATUSES: tuple[str, ...] = ("pass", "fail", "skip", "disturbed")
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")

# What each clause of the standard measures (SPEC EV-1..EV-11), for headings and tables.
CLAUSE_TITLES: dict[str, str] = {
    "EV-1": "Test environment and device identity",
    "EV-2": "Peak compute (dense GEMM per precision)",
    "EV-3": "Memory and host-device bandwidth",
    "EV-4": "Interconnect (collective communication)",
    "EV-5": "Inference performance (MLPerf LoadGen)",
    "EV-6": "Training performance",
    "EV-7": "Energy efficiency",
    "EV-8": "Compatibility",
    "EV-9": "Reliability",
    "EV-10": "Security",
    "EV-11": "Report",
}

#: Clauses whose figures are timed: a failure there can be another job's doing (see ``under_interference``).
TIMED_CLAUSES = frozenset({"EV-2", "EV-3", "EV-4", "EV-5", "EV-6", "EV-7", "EV-9"})

_TIME_UNITS = {"ns", "us", "µs", "ms", "s", "sec", "secs", "second", "seconds", "min", "minutes", "h", "hours"}
_ENERGY_UNITS = {"j", "mj", "kj", "wh", "kwh", "joule", "joules"}
_RATE_UNITS = {"qps", "fps", "gbps", "tbps", "mbps", "flops", "gflops", "tflops", "tops", "gops"}


def higher_is_better(unit: str, details: Mapping[str, Any] | None = None) -> bool | None:
    """The sense of a figure: True (throughput), False (latency, energy), None (neutral).

    An explicit ``details["higher_is_better"]`` wins; otherwise the unit decides: rates
    (``.../s``, FLOPS, TOPS, QPS) and efficiencies (``.../W``, ``.../J``) are higher-is-better,
    times (``ns`` .. ``h``) and energies (``J``, ``J/sample``, ``Wh``) lower-is-better.

    >>> higher_is_better("GFLOP/s"), higher_is_better("ms"), higher_is_better("J/sample")
    (True, False, False)
    >>> higher_is_better("samples/J"), higher_is_better("%"), higher_is_better("%", {"higher_is_better": True})
    (True, None, True)
    """
    hint = (details or {}).get("higher_is_better")
    if isinstance(hint, bool):
        return hint
    u = unit.strip().lower().replace(" ", "")
    if not u:
        return None
    if "/w" in u or "/j" in u or u.endswith("perwatt"):
        return True
    if u in _ENERGY_UNITS or u.startswith(("j/", "mj/", "kj/", "wh/")):
        return False
    if "/s" in u or u in _RATE_UNITS or u.endswith(("flops", "flop/s", "tops", "ops/s")):
        return True
    if u in _TIME_UNITS or u.startswith(tuple(f"{t}/" for t in ("ns", "us", "µs", "ms", "s"))):
        return False
    return None


def plain_json(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays, tuples, paths, dataclasses with
    ``to_dict``; non-finite floats become ``None`` (JSON has no NaN).

    >>> plain_json({"a": (1, float("nan")), "b": Path("x")})
    {'a': [1, None], 'b': 'x'}
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return plain_json(obj.to_dict())
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return plain_json(obj.tolist())
    if hasattr(obj, "item"):
        return plain_json(obj.item())
    return str(obj)


def spread_of(samples: Sequence[float]) -> dict[str, float]:
    """min / median / max / mean / stdev / cv (stdev over mean, as a fraction) of repeated runs."""
    values = [float(v) for v in samples if v is not None and math.isfinite(float(v))]
    if not values:
        raise UserError("spread_of needs at least one finite sample")
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "mean": mean,
        "stdev": stdev,
        "cv": (stdev / abs(mean)) if mean else 0.0,
    }


@dataclass(frozen=True)
class Item(Record):
    """One measured figure of the report (EV-11)."""

    id: str
    clause: str
    name: str
    value: Any
    unit: str
    method: str
    repeats: int
    spread: dict[str, float] | None
    status: Status
    reason: str | None = None
    reference: float | None = None
    reference_source: str | None = None
    ratio_to_reference: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: what other jobs took of the machine while this figure was timed
    #: (:class:`zhisuan.bench.interference.Interference` as a dict); None: not a timed item
    interference: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.clause not in CLAUSES:
            raise UserError(f"item {self.id!r}: clause must be one of EV-1..EV-11, got {self.clause!r}")
        if self.status not in STATUSES:
            raise UserError(f"item {self.id!r}: status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.status in ("skip", "fail", "disturbed") and not self.reason:
            raise UserError(f"item {self.id!r}: a {self.status} item needs a reason")

    @classmethod
    def measured(
        cls,
        id: str,
        clause: str,
        name: str,
        *,
        value: Any,
        unit: str,
        method: str,
        samples: Sequence[float] | None = None,
        repeats: int | None = None,
        reference: float | None = None,
        reference_source: str | None = None,
        status: Status = "pass",
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Item:
        """An item from a measurement; ``samples`` (one per repeat) give ``repeats`` and ``spread``."""
        spread = spread_of(samples) if samples else None
        n = repeats if repeats is not None else (len(samples) if samples else 1)
        ratio = None
        if reference and isinstance(value, (int, float)) and not isinstance(value, bool):
            ratio = float(value) / float(reference)
        return cls(
            id=id, clause=clause, name=name, value=value, unit=unit, method=method, repeats=n,
            spread=spread, status=status, reason=reason, reference=reference,
            reference_source=reference_source, ratio_to_reference=ratio, details=dict(details or {}),
        )

    @classmethod
    def skipped(cls, id: str, clause: str, name: str, *, reason: str, unit: str = "", method: str = "") -> Item:
        """An item that could not be measured here, with the reason (e.g. no GPU)."""
        return cls(id=id, clause=clause, name=name, value=None, unit=unit, method=method, repeats=0,
                   spread=None, status="skip", reason=reason)

    @classmethod
    def failed(cls, id: str, clause: str, name: str, *, reason: str, unit: str = "", method: str = "",
               value: Any = None, details: dict[str, Any] | None = None) -> Item:
        """An item whose measurement ran and failed its check, or crashed (reason says which)."""
        return cls(id=id, clause=clause, name=name, value=value, unit=unit, method=method, repeats=0,
                   spread=None, status="fail", reason=reason, details=dict(details or {}))

    @property
    def is_timed(self) -> bool:
        """A figure another job on the machine can change (a timed clause, not ``details["timed"] = False``)."""
        return self.clause in TIMED_CLAUSES and self.details.get("timed") is not False

    def under_interference(self, interference: dict[str, Any] | None) -> Item:
        """This timed item with ``interference`` recorded (its own record wins); a ``fail`` measured
        while the machine was ``disturbed`` becomes ``disturbed``, its figure and reason kept.
        An item that is not timed (:attr:`is_timed`) is returned as it is."""
        record = self.interference if self.interference is not None else interference
        if record is None or not self.is_timed:
            return self
        status, reason = self.status, self.reason
        if status == "fail" and record.get("verdict") == "disturbed":
            why = "; ".join(record.get("reasons") or ()) or "the machine was not quiet"
            status, reason = "disturbed", f"{reason} — measured while the machine was disturbed ({why}): not counted as a failure of the device"
        return replace(self, interference=record, status=status, reason=reason)

    @property
    def higher_is_better(self) -> bool | None:
        """The sense of this figure for comparisons (see :func:`higher_is_better`)."""
        return higher_is_better(self.unit, self.details)

    @property
    def is_numeric(self) -> bool:
        return isinstance(self.value, int | float) and not isinstance(self.value, bool) and math.isfinite(
            float(self.value)
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# report.json's key order: the header first, the items last
_REPORT_KEYS = ("schema_version", "suite", "started_at", "finished_at", "environment", "summary", "telemetry",
                "interference", "items")


@dataclass(frozen=True)
class Report(Record):
    """``report.json``: schema version, environment record (EV-1), suite, items.

    ``telemetry`` holds the device's telemetry over the whole run when a sampler could run:
    ``{"interval_s", "device", "summary", "series": {"t_s": [...], "utilization_pct": [...],
    "power_w": [...], "temperature_c": [...], "clock_mhz": [...]}, "unavailable": {...}}``.
    ``interference`` is the quiet check before the first task (None: not taken); each timed item
    carries its own in ``Item.interference``.
    """

    schema_version: str
    suite: str
    environment: dict[str, Any]
    items: tuple[Item, ...]
    started_at: str
    finished_at: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    interference: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["summary"] = d["summary"] or summarize(self.items)
        return {k: d[k] for k in _REPORT_KEYS}

    def clause_items(self, clause: str) -> list[Item]:
        return [i for i in self.items if i.clause == clause]

    @property
    def device_name(self) -> str:
        """The device under test as the environment record names it."""
        device = self.environment.get("device") or {}
        return str(device.get("name") or device.get("id") or "unknown device")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if not isinstance(data, dict) or "schema_version" not in data or "items" not in data:
            raise UserError("not a zhisuan report: it has no schema_version or items")
        major = str(data["schema_version"]).split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise UserError(f"report schema {data['schema_version']} is not readable by this zhisuan "
                            f"(schema {SCHEMA_VERSION})")
        return cls(
            schema_version=str(data["schema_version"]), suite=str(data.get("suite", "")),
            environment=dict(data.get("environment") or {}),
            items=tuple(Item.from_dict(i) for i in data["items"]),
            started_at=str(data.get("started_at", "")), finished_at=data.get("finished_at"),
            summary=dict(data.get("summary") or {}),
            telemetry=dict(data.get("telemetry") or {}),
            interference=data.get("interference") if isinstance(data.get("interference"), dict) else None,
        )


def summarize(items: Iterable[Item]) -> dict[str, Any]:
    """Counts of pass/fail/skip/disturbed, overall and per clause."""
    total = {s: 0 for s in STATUSES}
    per_clause: dict[str, dict[str, int]] = {}
    for item in items:
        total[item.status] += 1
        per_clause.setdefault(item.clause, {s: 0 for s in STATUSES})[item.status] += 1
    return {"counts": total, "clauses": dict(sorted(per_clause.items(), key=lambda kv: int(kv[0][3:])))}


def load_report(path: str | Path) -> Report:
    """Read a ``report.json``; a missing, unreadable or foreign file is a :class:`UserError`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no such report: {p}") from None
    except IsADirectoryError:
        raise UserError(f"{p} is a directory; give the report.json inside it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{p} is not JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        return Report.from_dict(data)
    except TypeError as exc:  # a field of the wrong shape
        raise UserError(f"{p} is not a valid zhisuan report: {exc}") from None
    except UserError as exc:
        raise UserError(f"{p}: {exc}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``report.json``, shipped as ``report.schema.json``."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_report(data: Mapping[str, Any]) -> list[str]:
    """Problems of a ``report.json`` document against :func:`json_schema`; empty when valid.

    Uses the ``jsonschema`` package (draft 2020-12), then checks what a schema cannot say: each
    item id belongs to its clause and item ids are unique.

    >>> validate_report({"schema_version": "1.0"})[0]
    "'suite' is a required property (at /)"
    """
    try:
        import jsonschema
    except ImportError as exc:
        raise UserError("validating a report needs the jsonschema package (pip install jsonschema)") from exc
    validator = jsonschema.Draft202012Validator(json_schema())
    problems = [
        f"{e.message} (at /{'/'.join(str(p) for p in e.absolute_path)})"
        for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]
    seen: set[str] = set()
    for item in data.get("items") or []:
        if not isinstance(item, Mapping):
            continue
        item_id, clause = str(item.get("id", "")), str(item.get("clause", ""))
        if not (item_id == clause or item_id.startswith(clause + ".")):
            problems.append(f"item {item_id!r} is not in its clause {clause!r} (ids start with the clause)")
        if item_id in seen:
            problems.append(f"item id {item_id!r} appears twice")
        seen.add(item_id)
    return problems
