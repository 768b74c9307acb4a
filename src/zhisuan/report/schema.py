"""The evaluation report's data model: one flat list of measured items plus the environment.

Every figure zhisuan reports is an :class:`Item`: what was measured (``id``, ``clause``, ``name``),
the value and its unit, how (``method``), how often (``repeats``) and how much it varied
(``spread``), and whether it passed. A skipped or failed item always says why.

>>> from zhisuan.report.schema import Item, spread_of
>>> item = Item.measured(
...     "EV-2.gemm.fp32", "EV-2", "Dense GEMM FP32", value=120.5, unit="GFLOP/s",
...     method="torch.matmul 2048x2048, median of 7", samples=[118.0, 120.5, 121.0],
...     reference=150.0,
... )
>>> item.status, round(item.ratio_to_reference, 3)
('pass', 0.803)
>>> Item.skipped("EV-3.h2d.pinned", "EV-3", "Host to device, pinned", reason="no GPU").status
'skip'
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from zhisuan.errors import UserError

SCHEMA_VERSION = "1.0"
CLAUSES = tuple(f"EV-{i}" for i in range(1, 12))
Status = Literal["pass", "fail", "skip"]
STATUSES: tuple[str, ...] = ("pass", "fail", "skip")


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
class Item:
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

    def __post_init__(self) -> None:
        if self.clause not in CLAUSES:
            raise UserError(f"item {self.id!r}: clause must be one of EV-1..EV-11, got {self.clause!r}")
        if self.status not in STATUSES:
            raise UserError(f"item {self.id!r}: status must be pass, fail or skip, got {self.status!r}")
        if self.status in ("skip", "fail") and not self.reason:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Report:
    """``report.json``: schema version, environment record (EV-1), suite, items."""

    schema_version: str
    suite: str
    environment: dict[str, Any]
    items: tuple[Item, ...]
    started_at: str
    finished_at: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "suite": self.suite,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "environment": self.environment,
            "summary": self.summary or summarize(self.items),
            "items": [i.to_dict() for i in self.items],
        }

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
        )


def summarize(items: Iterable[Item]) -> dict[str, Any]:
    """Counts of pass/fail/skip, overall and per clause."""
    total = {s: 0 for s in STATUSES}
    per_clause: dict[str, dict[str, int]] = {}
    for item in items:
        total[item.status] += 1
        per_clause.setdefault(item.clause, {s: 0 for s in STATUSES})[item.status] += 1
    return {"counts": total, "clauses": dict(sorted(per_clause.items(), key=lambda kv: int(kv[0][3:])))}
