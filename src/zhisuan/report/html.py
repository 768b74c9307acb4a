"""The self-contained ``report.html`` of an evaluation (SPEC EV-11): one section per clause.

Everything is inline: CSS in a ``<style>`` element and plots as base64 PNG images drawn with
matplotlib's Agg renderer (``matplotlib.figure.Figure``, no pyplot state), so the file opens
offline and can be mailed. Every text taken from the report is escaped with ``html.escape``.

Plots are made where they help:

- per clause (EV-2..EV-10), numeric items sharing a unit as horizontal bars, with min..max of
  the repeats as error bars and the reference (e.g. the theoretical peak) as a marker;
- each item with ``details["series"]`` (see :mod:`zhisuan.bench.schema`) as its own chart;
- in EV-7, the device's telemetry over the run (utilisation, power, temperature) with the
  start of each task marked.

``render_plots`` is separate from ``format_html`` so a caller can render the page twice (the
suite does, to add the EV-11 item describing the page) without drawing the plots twice.

>>> from zhisuan.report.html import format_html
>>> from zhisuan.bench.schema import Report
>>> page = format_html(Report("1.0", "quick", {}, (), "2026-01-01T00:00:00"), plots={})
>>> page.count('<section class="clause"')
11
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zhisuan import __version__
from zhisuan._io import atomic_write, atomic_write_json
from zhisuan.bench.schema import CLAUSE_TITLES, CLAUSES, STATUSES, Item, Report, plain_json, summarize
from zhisuan.report.format import (
    clause_rows,
    format_plain,
    format_reference,
    format_spread,
    format_value,
)
from zhisuan.results import Record

MAX_BARS = 24  # bars per chart; more are listed in the table only
MAX_DETAILS_CHARS = 4000

CSS = """
:root{--pass:#1b7a1b;--fail:#b00020;--skip:#8a6d00;--disturbed:#6a3d9a;--line:#d8d8d8;--muted:#666}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1.5em 2em 4em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:0 0 .4em}h3{font-size:1em;margin:1em 0 .3em}
.meta{color:var(--muted);font-size:13px}.meta code{font-size:12px;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:12.5px;background:#fff}
td,th{border:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f1f1f3;font-weight:600}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
section.clause{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1em 1.2em;margin:1.2em 0}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:11.5px;font-weight:600;color:#fff}
.badge.pass{background:var(--pass)}.badge.fail{background:var(--fail)}.badge.skip{background:var(--skip)}
.badge.disturbed{background:var(--disturbed)}
.counts .badge{margin-right:4px}
tr.fail td{background:#fff4f5}tr.skip td{color:#555}
.reason{color:var(--fail)}tr.skip .reason{color:var(--skip)}
tr.disturbed td{background:#f6f1fb}tr.disturbed .reason{color:var(--disturbed)}
.interference{color:var(--muted);font-size:11.5px}.interference.disturbed{color:var(--disturbed);font-weight:600}
.warning{border-left:4px solid var(--disturbed);background:#f6f1fb;padding:.4em .8em}
.method{color:#333;min-width:16em;max-width:34em}td.val{max-width:16em;overflow-wrap:anywhere}
td.item{min-width:11em;overflow-wrap:anywhere}
.plots{display:flex;flex-wrap:wrap;gap:12px;margin:.6em 0}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:6px;background:#fff}
figure img{display:block;max-width:100%}figcaption{font-size:12px;color:var(--muted);max-width:560px}
table.details{font-size:11.5px;margin:4px 0}table.details td,table.details th{padding:1px 6px}
details pre{white-space:pre-wrap;font-size:11.5px;background:#f6f6f6;padding:6px;max-height:24em;overflow:auto}
.none{color:var(--muted);font-style:italic}
nav a{margin-right:.7em;font-size:13px}
.env td:first-child{width:14em;color:#444}
.better{color:var(--pass);font-weight:600}.worse{color:var(--fail);font-weight:600}.same{color:#444}
.missing{color:var(--muted);font-style:italic}
"""

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Plot:
    """One embedded figure: a base64 PNG, its title and a caption saying what it shows."""

    title: str
    png_base64: str
    caption: str = ""

    def to_html(self) -> str:
        return (
            f'<figure><img alt="{esc(self.title)}" src="data:image/png;base64,{self.png_base64}">'
            f"<figcaption><b>{esc(self.title)}</b>{' — ' + esc(self.caption) if self.caption else ''}"
            "</figcaption></figure>"
        )


# ---- plots ---------------------------------------------------------------------------------------


def _figure(height_in: float = 3.2, width_in: float = 5.6) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def bar_plot(title: str, items: Sequence[Item], unit: str) -> Plot:
    """Values of ``items`` (one unit) as horizontal bars; min..max error bars; reference markers."""
    items = list(items)[:MAX_BARS]
    fig = _figure(height_in=min(1.0 + 0.32 * len(items), 9.0))
    ax = fig.add_subplot()
    ys = list(range(len(items)))[::-1]
    values = [float(i.value) for i in items]
    lo = [v - float(i.spread["min"]) if i.spread else 0.0 for i, v in zip(items, values, strict=True)]
    hi = [float(i.spread["max"]) - v if i.spread else 0.0 for i, v in zip(items, values, strict=True)]
    colors = [{"pass": "#4c78a8", "fail": "#d62728", "skip": "#bbbbbb", "disturbed": "#9467bd"}[i.status] for i in items]
    ax.barh(ys, values, color=colors, xerr=[[max(0.0, x) for x in lo], [max(0.0, x) for x in hi]],
            error_kw={"ecolor": "#333", "capsize": 2, "lw": 0.8})
    refs = [(y, float(i.reference)) for y, i in zip(ys, items, strict=True) if i.reference is not None]
    if refs:
        ax.scatter([r for _, r in refs], [y for y, _ in refs], marker="|", s=260, color="#d62728", zorder=3,
                   label="reference")
        ax.legend(loc="best", fontsize=8)
    positive = [v for v in values + [r for _, r in refs] if v > 0]
    if positive and len(positive) == len(values) + len(refs) and max(positive) / min(positive) > 1000:
        ax.set_xscale("log")
    ax.set_yticks(ys, [_short(i.name, 42) for i in items], fontsize=8)
    ax.set_xlabel(unit)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    caption = "bars: value; whiskers: min..max over repeats"
    if refs:
        caption += "; red mark: reference (ratio in the table)"
    return Plot(title, _png(fig), caption)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def series_plot(item: Item) -> Plot | None:
    """The chart of ``item.details["series"]`` (one dict or a list of dicts), or None if malformed."""
    raw = item.details.get("series")
    series = [raw] if isinstance(raw, dict) else list(raw) if isinstance(raw, list) else []
    series = [s for s in series if isinstance(s, dict) and isinstance(s.get("x"), list) and isinstance(s.get("y"), list)
              and len(s["x"]) == len(s["y"]) and s["y"] and _finite([y for y in s["y"] if y is not None])]
    if not series:
        return None
    first = series[0]
    kind = str(first.get("kind", "line"))
    fig = _figure()
    ax = fig.add_subplot()
    categorical = not _finite(first["x"])
    for n, s in enumerate(series):
        color = _PALETTE[n % len(_PALETTE)]
        label = s.get("label")
        xs = [str(x) for x in s["x"]] if categorical else s["x"]
        ys = [float("nan") if y is None else y for y in s["y"]]
        if kind == "bar":
            width = 0.8 / len(series)
            pos = [k + n * width - 0.4 + width / 2 for k in range(len(xs))]
            ax.bar(pos, ys, width=width, color=color, label=label)
            if n == 0:
                ax.set_xticks(range(len(xs)), [_short(str(x), 18) for x in xs], rotation=45 if len(xs) > 4 else 0,
                              ha="right" if len(xs) > 4 else "center", fontsize=7)
        elif kind == "scatter":
            ax.scatter(xs, ys, s=12, color=color, label=label)
        else:
            ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, ms=3, lw=1.3, color=color, label=label)
    hline = first.get("hline")
    if isinstance(hline, dict) and _finite([hline.get("y")]):
        ax.axhline(float(hline["y"]), color="#d62728", ls="--", lw=1, label=hline.get("label") or "reference")
    if first.get("log_x") and not categorical:
        ax.set_xscale("log", base=2 if all(isinstance(x, int) for x in first["x"]) else 10)
    if first.get("log_y"):
        ax.set_yscale("log")
    ax.set_xlabel(str(first.get("x_label", "")), fontsize=9)
    ax.set_ylabel(str(first.get("y_label", item.unit)), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(color="#eee")
    ax.set_axisbelow(True)
    if any(s.get("label") for s in series) or isinstance(hline, dict):
        ax.legend(fontsize=8)
    return Plot(item.name, _png(fig), str(first.get("caption") or item.id))


def telemetry_plot(report: Report) -> Plot | None:
    """Utilisation, power and temperature of the device over the run, with task starts marked."""
    tel = report.telemetry or {}
    series = tel.get("series") or {}
    t = series.get("t_s") or []
    if len(t) < 2:
        return None
    curves = {k: series.get(k) or [] for k in ("utilization_pct", "power_w", "temperature_c", "clock_mhz")}
    have = {k: v for k, v in curves.items() if len(v) == len(t) and any(x is not None for x in v)}
    if not have:
        return None
    fig = _figure(height_in=3.0, width_in=9.0)
    ax = fig.add_subplot()
    nan = float("nan")

    def ys(key: str) -> list[float]:
        return [nan if v is None else float(v) for v in have[key]]

    if "utilization_pct" in have:
        ax.plot(t, ys("utilization_pct"), color=_PALETTE[0], lw=1, label="utilisation (%)")
        ax.set_ylabel("utilisation (%)", fontsize=9)
        ax.set_ylim(0, 105)
    right_key = next((k for k in ("power_w", "temperature_c", "clock_mhz") if k in have), None)
    if right_key:
        ax2 = ax.twinx()
        label = {"power_w": "power (W)", "temperature_c": "temperature (°C)", "clock_mhz": "clock (MHz)"}[right_key]
        ax2.plot(t, ys(right_key), color=_PALETTE[3], lw=1, label=label)
        ax2.set_ylabel(label, fontsize=9)
        ax2.tick_params(labelsize=8)
    for task in report.summary.get("tasks") or []:
        start = task.get("start_offset_s")
        if isinstance(start, int | float):
            ax.axvline(start, color="#999", lw=0.6, ls=":")
            ax.text(start, 0.98, _short(str(task.get("id", "")).removeprefix("EV-"), 14), rotation=90, fontsize=6,
                    va="top", ha="right", color="#555", transform=ax.get_xaxis_transform())
    ax.set_xlabel("time since the suite started (s)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(color="#eee")
    missing = [f"{k}: {v}" for k, v in (tel.get("unavailable") or {}).items() if k in ("power_w", "temperature_c")]
    caption = (f"{tel.get('device')} sampled every {tel.get('interval_s')} s ({tel.get('points')} samples"
               f"{', shown as bucket means' if (tel.get('points') or 0) > len(t) else ''}); dotted lines: task starts"
               + ("; CPU utilisation is the whole host's, other processes included"
                  if str(tel.get("device", "")).startswith("cpu") else ""))
    if missing:
        caption += "; unavailable: " + "; ".join(missing)
    return Plot("Device telemetry over the run", _png(fig), caption)


def render_plots(report: Report) -> dict[str, list[Plot]]:
    """Every plot of the report, by clause."""
    plots: dict[str, list[Plot]] = {c: [] for c in CLAUSES}
    for clause in CLAUSES:
        items = report.clause_items(clause)
        if clause not in ("EV-1", "EV-11"):
            by_unit: dict[str, list[Item]] = {}
            for item in items:
                if item.is_numeric and item.status != "skip" and "series" not in item.details:
                    by_unit.setdefault(item.unit, []).append(item)
            for unit, group in by_unit.items():
                if len(group) >= 2 or any(i.reference is not None for i in group):
                    plots[clause].append(bar_plot(f"{clause}: figures in {unit or 'no unit'}", group, unit))
        for item in items:
            if "series" in item.details:
                plot = series_plot(item)
                if plot is not None:
                    plots[clause].append(plot)
    tel = telemetry_plot(report)
    if tel is not None:
        plots["EV-7"].insert(0, tel)
    return plots


# ---- the page ------------------------------------------------------------------------------------


def _badge(status: str) -> str:
    return f'<span class="badge {esc(status)}">{esc(status)}</span>'


def _counts(counts: dict[str, int]) -> str:
    return '<span class="counts">' + "".join(
        f'<span class="badge {s}">{counts.get(s, 0)} {s}</span>' for s in STATUSES
        if s != "disturbed" or counts.get(s)  # shown when there is one
    ) + "</span>"


def _quiet_check_html(check: dict[str, Any] | None, disturbed: int) -> str:
    """The warning under the counts: the machine was not quiet at the start, or items were disturbed."""
    lines = []
    if isinstance(check, dict) and check.get("verdict") == "disturbed":
        lines.append("The machine was not quiet when the run started: " + esc("; ".join(check.get("reasons") or [])))
    if disturbed:
        lines.append(f"{disturbed} item(s) failed while other jobs took the machine: they are marked "
                     "<b>disturbed</b> (figure kept, not counted as a failure of the device); measure them again "
                     "on a quiet machine (<code>--resume</code> reruns their tasks).")
    return "".join(f'<p class="warning">{line}</p>' for line in lines)


def interference_html(record: dict[str, Any] | None) -> str:
    """One line on what other jobs took of the machine while an item was timed ("" when not timed)."""
    if not isinstance(record, dict):
        return ""
    verdict = str(record.get("verdict") or "unknown")
    parts = []
    other, steal, load = record.get("other_cpu_share"), record.get("steal_share"), record.get("load1_max")
    if isinstance(other, int | float):
        parts.append(f"other processes {other:.0%} of {record.get('cpus', '?')} core(s)")
    if isinstance(steal, int | float):
        parts.append(f"steal {steal:.0%}")
    if isinstance(load, int | float):
        parts.append(f"load1 {load:.1f}")
    gpu = record.get("foreign_gpu_processes") or []
    if gpu:
        parts.append(f"{len(gpu)} other process(es) on the GPU")
    return (f'<div class="interference {esc(verdict)}">interference: {esc(verdict)}'
            + (f" — {esc(', '.join(parts))}" if parts else "") + "</div>")


def _details_json(details: dict[str, Any]) -> str:
    text = json.dumps(details, ensure_ascii=False, indent=1, default=str)
    if len(text) > MAX_DETAILS_CHARS:
        text = text[:MAX_DETAILS_CHARS] + f"\n… ({len(text) - MAX_DETAILS_CHARS} more characters in report.json)"
    return f"<details><summary>details</summary><pre>{esc(text)}</pre></details>"


MAX_TABLE_ROWS = 200


def details_table(details: dict[str, Any]) -> str:
    """``details["table"] = {"columns": [...], "rows": [[...], ...]}`` as an HTML table ("" if absent
    or malformed); more than MAX_TABLE_ROWS rows are cut with a note (all are in report.json)."""
    table = details.get("table")
    if not isinstance(table, dict):
        return ""
    columns, rows = table.get("columns"), table.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list) or not all(isinstance(r, list | tuple) for r in rows):
        return ""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in r) + "</tr>" for r in rows[:MAX_TABLE_ROWS])
    more = (f'<tr><td colspan="{len(columns)}">… {len(rows) - MAX_TABLE_ROWS} more rows in report.json</td></tr>'
            if len(rows) > MAX_TABLE_ROWS else "")
    return f'<table class="details"><thead><tr>{head}</tr></thead><tbody>{body}{more}</tbody></table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "—"
    return str(value)


def item_rows(items: Sequence[Item]) -> str:
    rows = []
    for i in items:
        reason = f'<div class="reason">{esc(i.reason)}</div>' if i.reason else ""
        rows.append(
            f'<tr class="{esc(i.status)}" id="{esc(i.id)}"><td>{_badge(i.status)}</td>'
            f'<td class="item"><b>{esc(i.name)}</b><br><code>{esc(i.id)}</code>{reason}'
            f'{interference_html(i.interference)}</td>'
            f'<td class="{"num" if i.is_numeric else "val"}">{esc(format_value(i.value, i.unit))}</td>'
            f'<td class="num">{esc(format_reference(i))}</td>'
            f'<td class="num">{i.repeats}</td>'
            f'<td class="num">{esc(format_spread(i.spread))}</td>'
            f'<td class="method">{esc(i.method) or "—"}{details_table(i.details)}'
            f'{_details_json(i.details) if i.details else ""}</td></tr>'
        )
    return (
        "<table><thead><tr><th>status</th><th>item</th><th>value</th><th>reference (ratio)</th>"
        "<th>repeats</th><th>spread: min / median / max, cv</th><th>method</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )


def _environment_html(env: dict[str, Any]) -> str:
    if not env:
        return '<p class="none">No environment record in this report.</p>'
    device = env.get("device") or {}
    hw = env.get("hardware") or {}
    cpu = hw.get("cpu") or {}
    libs = env.get("libraries") or {}
    clocks = (env.get("clocks") or {}).get("cpu") or {}
    threads = env.get("threads") or {}

    def lib(name: str) -> str:
        data = libs.get(name)
        if not data:
            return "not installed"
        extra = data.get("providers") or data.get("devices")
        return f"{data.get('version')}" + (f" ({', '.join(map(str, extra))})" if extra else "")

    rows = [
        ("device under test", f"{device.get('id')} — {device.get('name')}"),
        ("host", env.get("hostname")),
        ("CPU", f"{cpu.get('model')} — {cpu.get('sockets')} socket(s), {cpu.get('physical_cores')} cores, "
                f"{cpu.get('threads')} threads" if cpu else None),
        ("ISA features", ", ".join(cpu.get("isa_features") or []) or None),
        ("memory", _gib(hw.get("memory_bytes"))),
        ("GPUs", ", ".join(f"{g.get('id')} {g.get('name')}" for g in hw.get("gpus") or []) or "none"),
        ("OS / kernel", f"{(env.get('os') or {}).get('distribution')} / {(env.get('os') or {}).get('kernel')}"),
        ("drivers", ", ".join(f"{k} {v}" for k, v in (env.get("drivers") or {}).items() if v) or None),
        ("Python", (env.get("python") or {}).get("version")),
        ("libraries", "; ".join(f"{n} {lib(n)}" for n in ("numpy", "torch", "onnx", "onnxruntime", "openvino",
                                                            "mlperf_loadgen", "zhisuan"))),
        ("threads", f"{threads.get('requested')} requested; {threads.get('physical_cores')} physical cores, "
                    f"{threads.get('logical_cpus')} logical CPUs"),
        ("CPU clocks", f"governor {format_plain(clocks.get('governor'))}, current "
                       f"{format_value(clocks.get('current_mhz'), 'MHz')}, max {format_value(clocks.get('max_mhz'), 'MHz')}"),
        ("power limits", _power_limits(env.get("power_limits") or {})),
        ("command", env.get("command_line")),
        ("seed", env.get("seed")),
        ("collected at", env.get("collected_at")),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(format_plain(v))}</td></tr>" for k, v in rows)
    unavailable = env.get("unavailable") or {}
    missing = "".join(f"<tr><td><code>{esc(k)}</code></td><td>{esc(v)}</td></tr>" for k, v in unavailable.items())
    return (
        f'<h3>Environment record</h3><table class="env">{table}</table>'
        + (f"<details><summary>{len(unavailable)} value(s) not readable here, with the reason</summary>"
           f'<table class="env">{missing}</table></details>' if unavailable else "")
        + "<details><summary>full environment record (JSON)</summary><pre>"
        + esc(json.dumps(env, indent=1, ensure_ascii=False, default=str)) + "</pre></details>"
    )


def _gib(n: Any) -> str:
    return f"{n / (1 << 30):.1f} GiB" if isinstance(n, int | float) else "—"


def _power_limits(limits: dict[str, Any]) -> str | None:
    parts = []
    for zone in limits.get("rapl") or []:
        for c in zone.get("constraints") or []:
            if c.get("power_limit_w") is not None:
                parts.append(f"RAPL {zone.get('name')} {c.get('name')}: {c['power_limit_w']:g} W")
    for gpu in limits.get("gpus") or []:
        if gpu.get("enforced_power_limit_w") is not None:
            parts.append(f"{gpu.get('id')}: {gpu['enforced_power_limit_w']:g} W")
    return "; ".join(parts) or "not readable (see below)"


def _failed_links(ids: Sequence[str]) -> str:
    if not ids:
        return ""
    links = ", ".join(f'<a href="#{esc(i)}">{esc(i)}</a>' for i in ids)
    return f'<div class="reason">failed: {links}</div>'


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body`` (already escaped) with the shared CSS."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><main>{body}</main></body></html>\n"
    )


def format_html(report: Report, *, plots: dict[str, list[Plot]] | None = None) -> str:
    """The report page. ``plots`` from :func:`render_plots` (drawn here when not given)."""
    plots = render_plots(report) if plots is None else plots
    summary = report.summary or {}
    counts = summary.get("counts") or {s: sum(i.status == s for i in report.items) for s in STATUSES}
    device = report.device_name
    duration = summary.get("duration_s")
    head = (
        f"<h1>zhisuan evaluation — {esc(device)}</h1>"
        f'<p class="meta">suite <b>{esc(report.suite)}</b> · started {esc(report.started_at)} · finished '
        f"{esc(report.finished_at or '—')}"
        + (f" · {esc(format_value(duration, 's'))}" if duration is not None else "")
        + f" · schema {esc(report.schema_version)}<br>command <code>{esc((report.environment or {}).get('command_line', '—'))}</code></p>"
        + f"<p>{_counts(counts)}</p>"
        + _quiet_check_html(report.interference, counts.get("disturbed", 0))
        + "<nav>" + "".join(f'<a href="#{c}">{c}</a>' for c in CLAUSES) + "</nav>"
    )
    summary_rows = "".join(
        f'<tr><td><a href="#{r.clause}">{r.clause}</a></td><td>{esc(r.title)}</td><td class="num">{r.counts["pass"]}</td>'
        f'<td class="num">{r.counts["fail"]}</td><td class="num">{r.counts["skip"]}</td>'
        f'<td class="num">{r.counts.get("disturbed", 0)}</td>'
        f"<td>{'<br>'.join(esc(k) for k in r.key_figures) or '—'}"
        + _failed_links(r.failed)
        + "</td></tr>"
        for r in clause_rows(report)
    )
    parts = [
        head,
        '<h2 style="margin-top:1em">Summary</h2><table><thead><tr><th>clause</th><th>what</th><th>pass</th>'
        f"<th>fail</th><th>skip</th><th>disturbed</th><th>key figures</th></tr></thead><tbody>{summary_rows}</tbody></table>",
    ]
    for clause in CLAUSES:
        items = report.clause_items(clause)
        c = {s: sum(i.status == s for i in items) for s in STATUSES}
        body = [f'<h2>{clause} · {esc(CLAUSE_TITLES[clause])}</h2><p>{_counts(c)}</p>']
        if clause == "EV-1":
            body.append(_environment_html(report.environment))
        figures = plots.get(clause) or []
        if figures:
            body.append('<div class="plots">' + "".join(p.to_html() for p in figures) + "</div>")
        if items:
            body.append(item_rows(items))
        else:
            body.append('<p class="none">No item for this clause in this report (not selected, or no task '
                        "of this suite covers it on this device).</p>")
        parts.append(f'<section class="clause" id="{clause}">{"".join(body)}</section>')
    parts.append(f'<p class="meta">written by zhisuan {esc(__version__)}; every figure above was measured in this '
                 "run with the method shown. report.json holds the same data.</p>")
    return page(f"zhisuan evaluation — {device}", "".join(parts))


# ---- checking the page (EV-11) -------------------------------------------------------------------

_EXTERNAL = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import)""",
                       re.IGNORECASE)
_SECTION = re.compile(r'<section class="clause" id="(EV-\d+)"')


@dataclass(frozen=True)
class HtmlCheck(Record):
    """What :func:`check_html` found in a page: clause sections, embedded plots, external references."""

    bytes: int
    sections: tuple[str, ...]
    plots: int
    external_refs: int
    items_missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return len(self.sections) == len(CLAUSES) and self.external_refs == 0 and not self.items_missing

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ok": self.ok}

    def to_item(self) -> Item:
        method = ("the page is parsed after rendering: one <section> per clause EV-1..EV-11, plots embedded as "
                  "data: URIs, no http(s):// or protocol-relative src/href/url() and no @import, every item id "
                  "present; value: clause sections")
        name = "report.html self-contained, one section per clause"
        if self.ok:
            return Item.measured("EV-11.report.html", "EV-11", name, value=len(self.sections), unit="sections",
                                 method=method, repeats=1, reference=len(CLAUSES),
                                 reference_source="clauses of the standard", details={**self.to_dict(), "key": True})
        problems = []
        if len(self.sections) != len(CLAUSES):
            problems.append(f"{len(self.sections)} of {len(CLAUSES)} clause sections")
        if self.external_refs:
            problems.append(f"{self.external_refs} external reference(s)")
        if self.items_missing:
            problems.append(f"items not shown: {', '.join(self.items_missing[:5])}")
        return Item.failed("EV-11.report.html", "EV-11", name, value=len(self.sections), unit="sections",
                           method=method, reason="; ".join(problems), details=self.to_dict())


def check_html(text: str, report: Report | None = None) -> HtmlCheck:
    """Check a rendered page; with ``report``, also that every item id appears in it."""
    missing: tuple[str, ...] = ()
    if report is not None:
        missing = tuple(i.id for i in report.items if f'id="{esc(i.id)}"' not in text)
    return HtmlCheck(
        bytes=len(text.encode("utf-8")),
        sections=tuple(dict.fromkeys(_SECTION.findall(text))),
        plots=text.count('src="data:image/png;base64,'),
        external_refs=len(_EXTERNAL.findall(text)),
        items_missing=missing,
    )


def write_suite_html(report: Report, out_dir: str | Path) -> Report:
    """Add ``report.html`` to a suite's output directory, with its EV-11 item; returns the final report.

    :func:`zhisuan.bench.suite.run_suite` writes ``report.json``; this renders the page, checks it
    (the ``EV-11.report.html`` item), and rewrites ``report.json`` with that item and the summary.
    """
    out_dir = Path(out_dir)
    plots = render_plots(report)
    check = check_html(format_html(report, plots=plots), report)
    final = replace(report, items=(*report.items, check.to_item()))
    final = replace(final, summary={**final.summary, **summarize(final.items)})
    atomic_write_json(out_dir / "report.json", plain_json(final.to_dict()))
    text = format_html(final, plots=plots)
    atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return final


def write_html(report: Report, path: str | Path) -> Path:
    """Render and write the page atomically."""
    text = format_html(report)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
