"""Pure text formatting of report items and summaries, shared by the HTML report and the CLI tables.

>>> from zhisuan.report.format import format_number, format_value
>>> format_number(123456.7), format_number(0.5), format_number(3)
('123,457', '0.5', '3')
>>> format_value(12.3456, "GB/s")
'12.35 GB/s'
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zhisuan.bench.schema import CLAUSE_TITLES, CLAUSES, STATUSES, Item, Report
from zhisuan.results import Record


def format_number(value: float | int) -> str:
    """A number for people: thousands separators for large values, 4 significant digits otherwise."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e4:
        return f"{v:,.0f}"
    if a >= 1e-3:
        return f"{v:.4g}"
    return f"{v:.3e}"


def format_plain(value: Any) -> str:
    """Any item value as text: numbers, booleans, lists (comma separated), dicts (compact JSON)."""
    if value is None:
        return "—"
    if isinstance(value, bool | int | float):
        return format_number(value)
    if isinstance(value, list | tuple):
        return ", ".join(format_plain(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def format_value(value: Any, unit: str = "") -> str:
    text = format_plain(value)
    return f"{text} {unit}" if unit and value is not None else text


def format_spread(spread: dict[str, float] | None, unit: str = "") -> str:
    """``min / median / max`` and the coefficient of variation, or ``—``."""
    if not spread:
        return "—"
    parts = " / ".join(format_number(spread[k]) for k in ("min", "median", "max") if k in spread)
    cv = spread.get("cv")
    tail = f", cv {100 * cv:.2g}%" if cv is not None else ""
    return f"{parts}{' ' + unit if unit else ''}{tail}"


def format_reference(item: Item) -> str:
    if item.reference is None:
        return "—"
    text = format_value(item.reference, item.unit)
    if item.ratio_to_reference is not None:
        text += f" (×{item.ratio_to_reference:.3g})"
    return text


def key_figures(items: Sequence[Item], limit: int = 3) -> list[Item]:
    """Headline items of a clause: those marked ``details["key"]``, else the first numeric passes."""
    marked = [i for i in items if i.details.get("key") is True and i.status == "pass"]
    if marked:
        return marked[:limit]
    return [i for i in items if i.status == "pass" and i.is_numeric][:limit]


def format_key_figure(item: Item) -> str:
    text = f"{item.name}: {format_value(item.value, item.unit)}"
    if item.ratio_to_reference is not None:
        text += f" ({100 * item.ratio_to_reference:.0f}% of ref.)"
    return text


@dataclass(frozen=True)
class ClauseRow(Record):
    """One line of the summary table: a clause, its counts and its headline figures."""

    clause: str
    title: str
    counts: dict[str, int]
    key_figures: tuple[str, ...]
    failed: tuple[str, ...]  # ids of failed items


def clause_rows(report: Report, *, limit: int = 3) -> list[ClauseRow]:
    """Every clause EV-1..EV-11 with its pass/fail/skip counts and key figures (absent clauses too)."""
    rows = []
    for clause in CLAUSES:
        items = report.clause_items(clause)
        counts = {s: sum(i.status == s for i in items) for s in STATUSES}
        rows.append(ClauseRow(
            clause=clause, title=CLAUSE_TITLES[clause], counts=counts,
            key_figures=tuple(format_key_figure(i) for i in key_figures(items, limit)),
            failed=tuple(i.id for i in items if i.status == "fail"),
        ))
    return rows
