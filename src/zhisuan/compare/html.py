"""A self-contained HTML report of a :class:`~zhisuan.compare.CompareResult` (inline CSS and SVG).

``format_html`` is pure; ``write_html`` writes it atomically.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from zhisuan.compare.results import CompareResult

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}.ok{color:#1b7a1b;font-weight:600}
.box{border:2px solid #b00020;padding:.6em 1em;display:inline-block;background:#fff5f5}
tr.div td{background:#fff0f0}code{font-size:12px}
"""


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return escape(str(value))


def _verdict(ok: bool) -> str:
    return '<span class="ok">within tolerance</span>' if ok else '<span class="bad">outside tolerance</span>'


def _plot(layers: list[dict[str, Any]]) -> str:
    """Per-layer 1 - cosine (log scale) of own and total error, as an inline SVG."""
    if not layers:
        return ""
    width, height, pad = 900, 260, 40

    def y_of(cos: float | None) -> float:
        err = 1.0 - (cos if cos is not None and not math.isnan(cos) else 0.0)
        level = min(max(math.log10(max(err, 1e-9)), -9.0), 0.0)  # 1e-9 .. 1
        return pad + (-level / 9.0) * (height - 2 * pad)

    def x_of(i: int) -> float:
        return pad + (i / max(len(layers) - 1, 1)) * (width - 2 * pad)

    def line(key: str, color: str) -> str:
        points = " ".join(f"{x_of(i):.1f},{y_of(layer[key]['cosine']):.1f}" for i, layer in enumerate(layers))
        return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>'

    ticks = "".join(
        f'<text x="4" y="{y_of(1 - 10.0**-k) + 4:.1f}" font-size="10">1e-{k}</text>'
        f'<line x1="{pad}" x2="{width - pad}" y1="{y_of(1 - 10.0**-k):.1f}" y2="{y_of(1 - 10.0**-k):.1f}" stroke="#eee"/>'
        for k in range(0, 10, 3)
    )
    marks = "".join(
        f'<circle cx="{x_of(i):.1f}" cy="{y_of(layer["own"]["cosine"]):.1f}" r="3" fill="#b00020"/>'
        for i, layer in enumerate(layers) if layer["diverges"]
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'aria-label="per-layer error">'
        f"{ticks}{line('total', '#1f77b4')}{line('own', '#ff7f0e')}{marks}"
        f'<text x="{pad}" y="{height - 8}" font-size="11">layer (CAND graph order) — '
        '<tspan fill="#1f77b4">total 1−cosine</tspan>, <tspan fill="#ff7f0e">own 1−cosine</tspan>, '
        '<tspan fill="#b00020">● divergent</tspan></text></svg>'
    )


def format_html(result: CompareResult) -> str:
    data = result.to_dict()
    cfg = data["config"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>zhisuan compare</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>zhisuan compare — {_verdict(data['within_tolerance'])}</h1>",
        "<table>",
        f"<tr><th>REF</th><td><code>{escape(data['ref']['model'])}</code> on {escape(cfg['ref_runtime'])} "
        f"{escape(cfg['ref_precision'])} ({escape(str(data['ref']['runtime'].get('version')))})</td></tr>",
        f"<tr><th>CAND</th><td><code>{escape(data['cand']['model'])}</code> on {escape(cfg['cand_runtime'])} "
        f"{escape(cfg['cand_precision'])} ({escape(str(data['cand']['runtime'].get('version')))})</td></tr>",
        f"<tr><th>tolerance</th><td>|cand − ref| ≤ {_num(cfg['atol'])} + {_num(cfg['rtol'])}·|ref|, "
        f"cosine ≥ {_num(cfg['min_cosine'])}</td></tr>",
        f"<tr><th>inputs</th><td>{data['samples']} sample(s)</td></tr>",
        f"<tr><th>time</th><td>{_num(data['timings_s'].get('total'))} s</td></tr></table>",
        "<h2>Outputs</h2><table><tr><th>output</th><th>cosine</th><th>max abs</th><th>max rel</th>"
        "<th>mean abs</th><th>top-1</th><th>outside tol.</th><th>verdict</th></tr>",
    ]
    for out in data["outputs"]:
        parts.append(
            f"<tr><td><code>{escape(out['name'])}</code></td><td>{_num(out['cosine'])}</td>"
            f"<td>{_num(out['max_abs_error'])}</td><td>{_num(out['max_rel_error'])}</td>"
            f"<td>{_num(out['mean_abs_error'])}</td><td>{_num(out['top1_agreement'])}</td>"
            f"<td>{out['violations']}</td><td>{_verdict(out['within_tolerance'])}</td></tr>"
        )
    parts.append("</table>")
    if data["layerwise"]:
        first = data["first_divergence"]
        parts.append("<h2>First divergent node</h2>")
        if first is None:
            parts.append("<p>None: every layer's own error is within tolerance.</p>")
        else:
            parts.append(
                f"<div class='box'><b><code>{escape(first['node'])}</code></b> ({escape(first['op_type'])}) → "
                f"<code>{escape(first['output'])}</code>, paired with REF <code>{escape(first['ref_tensor'])}</code><br>"
                f"own cosine {_num(first['own']['cosine'])}, max abs {_num(first['own']['max_abs_error'])}; "
                f"total cosine {_num(first['total']['cosine'])}, max abs {_num(first['total']['max_abs_error'])}</div>"
            )
        pairing = data["pairing"] or {}
        parts.append(
            f"<h2>Layers</h2><p>Pairing: {escape(str(pairing.get('method')))}; {pairing.get('layers', 0)} layers; "
            f"{len(pairing.get('unpaired_cand', []))} CAND and {len(pairing.get('unpaired_ref', []))} REF "
            "tensors unpaired. <i>Own</i> error: the layer fed REF's inputs; <i>carried</i>: the change "
            "its CAND inputs cause; <i>total</i>: end to end.</p>"
            f"<p><i>{escape(data['layers_note'])}</i></p>"
        )
        parts.append(_plot(data["layers"]))
        parts.append(
            "<table><tr><th>#</th><th>node</th><th>op</th><th>CAND tensor</th><th>REF tensor</th>"
            "<th>own cosine</th><th>own max abs</th><th>carried max abs</th><th>total cosine</th>"
            "<th>total max abs</th></tr>"
        )
        for i, layer in enumerate(data["layers"]):
            parts.append(
                f"<tr class='{'div' if layer['diverges'] else ''}'><td>{i}</td><td><code>{escape(layer['node'])}</code></td>"
                f"<td>{escape(layer['op_type'])}</td><td><code>{escape(layer['output'])}</code></td>"
                f"<td><code>{escape(layer['ref_tensor'])}</code></td><td>{_num(layer['own']['cosine'])}</td>"
                f"<td>{_num(layer['own']['max_abs_error'])}</td><td>{_num(layer['carried']['max_abs_error'])}</td>"
                f"<td>{_num(layer['total']['cosine'])}</td><td>{_num(layer['total']['max_abs_error'])}</td></tr>"
            )
        parts.append("</table>")
        for key, label in (("unpaired_cand", "Unpaired CAND tensors"), ("unpaired_ref", "Unpaired REF tensors")):
            names = pairing.get(key) or []
            if names:
                listed = ", ".join(f"<code>{escape(n)}</code>" for n in names[:200])
                more = f" … and {len(names) - 200} more" if len(names) > 200 else ""
                parts.append(f"<h2>{label}</h2><p>{listed}{more}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(result: CompareResult, path: str | Path) -> Path:
    from zhisuan._io import atomic_write

    text = format_html(result)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
