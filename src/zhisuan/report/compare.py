"""Compare evaluation reports side by side for device selection (选型), SPEC EV-11.

Rows are item ids (the union over the reports, by clause); columns are the reports, headed by
the device name from each report's environment record. Numeric values get a ratio against the
first report and a verdict with the figure's sense (:func:`zhisuan.bench.schema.higher_is_better`:
throughput higher is better, latency and energy lower is better, neutral units get no verdict).
A ratio within ``tolerance`` (default 3%) of 1 is "same". An item absent from a report is shown
as missing, never as 0.

>>> from zhisuan.report.compare import compare_reports
>>> from zhisuan.bench.schema import Item, Report
>>> def rep(v):
...     item = Item.measured("EV-2.gemm.fp32", "EV-2", "GEMM", value=v, unit="GFLOP/s", method="m")
...     return Report("1.0", "quick", {"device": {"name": f"dev{v}"}}, (item,), "t")
>>> row = compare_reports([rep(100.0), rep(150.0)]).rows[0]
>>> row.cells[1].ratio, row.cells[1].verdict
(1.5, 'better')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from zhisuan._io import atomic_write
from zhisuan.bench.schema import CLAUSE_TITLES, CLAUSES, STATUSES, Item, Report, higher_is_better, load_report
from zhisuan.errors import UserError
from zhisuan.results import Record

Verdict = Literal["better", "worse", "same"]
DEFAULT_TOLERANCE = 0.03


@dataclass(frozen=True)
class Cell(Record):
    """One report's entry for one item; ``status`` None means the item is missing from that report."""

    value: Any
    unit: str | None
    status: str | None
    reason: str | None = None
    ratio: float | None = None  # value / first report's value
    verdict: Verdict | None = None
    cv: float | None = None  # coefficient of variation of the repeats

    @property
    def missing(self) -> bool:
        return self.status is None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "missing": self.missing}


@dataclass(frozen=True)
class Row(Record):
    id: str
    clause: str
    name: str
    unit: str
    higher_is_better: bool | None
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class ReportComparison(Record):
    labels: tuple[str, ...]  # column headers: device names, made unique
    sources: tuple[str, ...]  # where each report came from (paths), or ""
    reports: tuple[dict[str, Any], ...]  # per report: device, suite, host, started_at, counts
    rows: tuple[Row, ...]
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        rows = fields.pop("rows")
        return {"baseline": self.labels[0], **fields, "rows": rows, "verdicts": self.verdict_counts()}

    def verdict_counts(self) -> list[dict[str, int]]:
        """Per report, how many items are better / worse / same than the first report."""
        out = []
        for k in range(len(self.labels)):
            counts = {"better": 0, "worse": 0, "same": 0, "missing": 0}
            for row in self.rows:
                cell = row.cells[k]
                if cell.missing:
                    counts["missing"] += 1
                elif cell.verdict:
                    counts[cell.verdict] += 1
            out.append(counts)
        return out


def _number(item: Item) -> float | None:
    return float(item.value) if item.is_numeric and item.status != "skip" else None


def _verdict(ratio: float, sense: bool | None, tolerance: float) -> Verdict | None:
    if sense is None:
        return None
    if abs(ratio - 1.0) <= tolerance:
        return "same"
    return "better" if (ratio > 1.0) == sense else "worse"


def _labels(reports: Sequence[Report], sources: Sequence[str]) -> tuple[str, ...]:
    names = [r.device_name for r in reports]
    out = []
    for k, (name, source) in enumerate(zip(names, sources, strict=True)):
        if names.count(name) > 1:
            where = Path(source).parent.name if source and Path(source).name == "report.json" else Path(source).stem
            name = f"{name} ({where or f'#{k + 1}'})"
        out.append(name)
    # still equal (same device, same folder names): number them
    return tuple(f"{n} #{k + 1}" if out.count(n) > 1 else n for k, n in enumerate(out))


def compare_reports(
    reports: Sequence[Report], *, sources: Sequence[str] | None = None, tolerance: float = DEFAULT_TOLERANCE
) -> ReportComparison:
    """Side-by-side rows of every item id in ``reports``; ratios and verdicts against the first."""
    if len(reports) < 2:
        raise UserError(f"compare needs at least two reports, got {len(reports)}")
    if not 0 <= tolerance < 1:
        raise UserError(f"the tolerance is a fraction in [0, 1), not {tolerance}")
    sources = list(sources) if sources is not None else [""] * len(reports)
    by_id = [{i.id: i for i in r.items} for r in reports]
    order: dict[str, Item] = {}
    for report in reports:
        for item in report.items:
            order.setdefault(item.id, item)
    ids = sorted(order, key=lambda i: (CLAUSES.index(order[i].clause), list(order).index(i)))
    rows = []
    for item_id in ids:
        first = order[item_id]
        sense = higher_is_better(first.unit, first.details)
        base_item = by_id[0].get(item_id)
        base = _number(base_item) if base_item is not None else None
        cells = []
        for k, items in enumerate(by_id):
            item = items.get(item_id)
            if item is None:
                cells.append(Cell(None, None, None))
                continue
            ratio = verdict = None
            value = _number(item)
            if k > 0 and value is not None and base not in (None, 0.0) and item.unit == base_item.unit:  # type: ignore[union-attr]
                ratio = value / base  # type: ignore[operator]
                verdict = _verdict(ratio, sense, tolerance)
            cells.append(Cell(item.value, item.unit, item.status, item.reason, ratio, verdict,
                              (item.spread or {}).get("cv")))
        rows.append(Row(item_id, first.clause, first.name, first.unit, sense, tuple(cells)))
    meta = tuple(
        {"device": r.device_name, "suite": r.suite, "hostname": r.environment.get("hostname"),
         "started_at": r.started_at, "source": s,
         "counts": {st: sum(i.status == st for i in r.items) for st in STATUSES}}
        for r, s in zip(reports, sources, strict=True)
    )
    return ReportComparison(_labels(reports, sources), tuple(sources), meta, tuple(rows), tolerance)


def compare_files(paths: Sequence[str | Path], *, tolerance: float = DEFAULT_TOLERANCE) -> ReportComparison:
    """Load each ``report.json`` (or a directory holding one) and compare them."""
    resolved = [Path(p) / "report.json" if Path(p).is_dir() else Path(p) for p in paths]
    return compare_reports([load_report(p) for p in resolved], sources=[str(p) for p in resolved],
                           tolerance=tolerance)


# ---- HTML ----------------------------------------------------------------------------------------


def _normalised(row: Row, k: int) -> float | None:
    """Performance of report ``k`` relative to the first, oriented so that higher is better."""
    cell = row.cells[k]
    if k == 0:
        return 1.0
    if cell.ratio is None or row.higher_is_better is None or cell.ratio <= 0:
        return None
    return cell.ratio if row.higher_is_better else 1.0 / cell.ratio


def relative_plot(comparison: ReportComparison, limit: int = 30) -> Any:
    """Grouped bars of each comparable item's performance relative to the first report (higher is better)."""
    from zhisuan.report.html import Plot, _figure, _png, _short

    rows = [r for r in comparison.rows if any(_normalised(r, k) is not None for k in range(1, len(r.cells)))][:limit]
    if not rows:
        return None
    fig = _figure(height_in=min(1.2 + 0.3 * len(rows) * max(1, len(comparison.labels) - 1) ** 0.5, 10), width_in=8)
    ax = fig.add_subplot()
    n = len(comparison.labels)
    height = 0.8 / n
    for k in range(n):
        values = [_normalised(r, k) for r in rows]
        ys = [len(rows) - 1 - j + (k - (n - 1) / 2) * height for j in range(len(rows))]
        ax.barh(ys, [v if v is not None else 0 for v in values], height=height, label=_short(comparison.labels[k], 40))
    ax.axvline(1.0, color="#333", lw=0.8)
    ax.set_yticks(range(len(rows))[::-1], [_short(r.name, 40) for r in rows], fontsize=8)
    ax.set_xlabel(f"relative to {_short(comparison.labels[0], 40)} (>1 is better, latency and energy inverted)",
                  fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#eee")
    ax.legend(fontsize=8, loc="lower right")
    return Plot("Relative performance", _png(fig),
                "items with a known sense only; missing bars: not measured or not comparable in that report")


def format_compare_html(comparison: ReportComparison) -> str:
    """A self-contained page: the reports compared, one table grouped by clause, a relative chart."""
    from zhisuan.report.format import format_number, format_value
    from zhisuan.report.html import esc, page

    head = "".join(f"<th>{esc(label)}</th>" for label in comparison.labels)
    meta_rows = "".join(
        f"<tr><td>{esc(label)}</td><td>{esc(m['suite'])}</td><td>{esc(m.get('hostname') or '—')}</td>"
        f"<td>{esc(m['started_at'])}</td><td>{m['counts']['pass']} / {m['counts']['fail']} / {m['counts']['skip']}"
        + (f" ({m['counts']['disturbed']} disturbed)" if m["counts"].get("disturbed") else "") + "</td>"
        f"<td><code>{esc(m['source'] or '—')}</code></td></tr>"
        for label, m in zip(comparison.labels, comparison.reports, strict=True)
    )
    body = [
        f"<h1>zhisuan report comparison</h1><p class='meta'>{len(comparison.labels)} reports; ratios against "
        f"<b>{esc(comparison.labels[0])}</b>; differences within {100 * comparison.tolerance:g}% count as the same. "
        "Sense per unit: rates (…/s, FLOPS, QPS) and efficiencies (…/W) higher is better; times and energies "
        "lower is better; others neutral.</p>",
        "<table><thead><tr><th>device</th><th>suite</th><th>host</th><th>started</th><th>pass / fail / skip</th>"
        f"<th>file</th></tr></thead><tbody>{meta_rows}</tbody></table>",
    ]
    plot = relative_plot(comparison)
    if plot is not None:
        body.append(f'<div class="plots">{plot.to_html()}</div>')
    rows_html = []
    for clause in CLAUSES:
        rows = [r for r in comparison.rows if r.clause == clause]
        if not rows:
            continue
        rows_html.append(f'<tr><th colspan="{2 + len(comparison.labels)}">{clause} · {esc(CLAUSE_TITLES[clause])}</th></tr>')
        for row in rows:
            sense = {True: "↑ higher is better", False: "↓ lower is better", None: "neutral"}[row.higher_is_better]
            cells = []
            for cell in row.cells:
                if cell.missing:
                    cells.append('<td class="missing">missing</td>')
                    continue
                text = esc(format_value(cell.value, cell.unit or ""))
                if cell.status != "pass":
                    text += f' <span class="badge {esc(cell.status)}" title="{esc(cell.reason or "")}">{esc(cell.status)}</span>'
                if cell.ratio is not None:
                    text += f' <span class="{esc(cell.verdict or "same")}">×{format_number(cell.ratio)}</span>'
                cells.append(f'<td class="{esc(cell.verdict or "")}">{text}</td>')
            rows_html.append(
                f"<tr><td><b>{esc(row.name)}</b><br><code>{esc(row.id)}</code></td><td>{esc(sense)}</td>{''.join(cells)}</tr>"
            )
    body.append(f"<table><thead><tr><th>item</th><th>sense</th>{head}</tr></thead><tbody>{''.join(rows_html)}</tbody></table>")
    return page("zhisuan report comparison", "".join(body))


def write_compare_html(comparison: ReportComparison, path: str | Path) -> Path:
    text = format_compare_html(comparison)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
