"""report.html: a section per clause, every item, escaped text, embedded plots, nothing external."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from zhisuan.bench.schema import CLAUSES, SCHEMA_VERSION, Item, Report
from zhisuan.report.html import check_html, format_html, render_plots, write_html


def report_with(*items: Item, telemetry: dict | None = None, summary: dict | None = None) -> Report:
    env = {"device": {"id": "cpu:0", "kind": "cpu", "name": "Test <CPU>"}, "command_line": "zhisuan evaluate",
           "hostname": "h", "unavailable": {"clocks.cpu.governor": "no cpufreq"}}
    return Report(SCHEMA_VERSION, "quick", env, items, "2026-01-01T00:00:00", "2026-01-01T00:01:00",
                  summary=summary or {}, telemetry=telemetry or {})


GEMM = [
    Item.measured(f"EV-2.gemm.{p}", "EV-2", f"Dense GEMM {p.upper()}", value=v, unit="GFLOP/s", method="torch.matmul",
                  samples=[v * 0.98, v, v * 1.01], reference=200.0)
    for p, v in (("fp32", 120.0), ("bf16", 180.0))
]


def test_every_clause_has_a_section_and_every_item_a_row() -> None:
    report = report_with(*GEMM, Item.skipped("EV-3.h2d", "EV-3", "Host to device", reason="no GPU"))
    page = format_html(report)
    assert re.findall(r'<section class="clause" id="(EV-\d+)"', page) == list(CLAUSES)
    for item in report.items:
        assert f'id="{item.id}"' in page
    assert "no GPU" in page and "×0.6" in page  # reason and ratio to the reference
    assert "117.6 / 120 / 121.2" in page  # min / median / max
    check = check_html(page, report)
    assert check.ok and check.external_refs == 0 and check.plots >= 1


def test_text_from_the_report_is_escaped() -> None:
    evil = Item.failed("EV-10.leak", "EV-10", "<script>alert(1)</script>", reason='found "secret" & <b>more</b>',
                       method="<img src=x onerror=alert(2)>", details={"note": "</pre><script>x</script>"})
    page = format_html(report_with(evil))
    assert "<script>" not in page and "<img src=x" not in page and "<b>more</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;secret&quot; &amp; &lt;b&gt;more&lt;/b&gt;" in page
    assert "Test &lt;CPU&gt;" in page


def test_a_details_table_is_rendered_as_an_escaped_html_table() -> None:
    table = {"columns": ["loader", "refused"], "rows": [["<onnx>", True], ["torch.load", 0.123456]]}
    item = Item.failed("EV-10.x", "EV-10", "Loaders", reason="r", details={"table": table})
    page = format_html(report_with(item))
    assert '<table class="details"><thead><tr><th>loader</th><th>refused</th></tr></thead>' in page
    assert "<td>&lt;onnx&gt;</td><td>True</td>" in page and "<td>0.1235</td>" in page
    broken = Item.failed("EV-10.y", "EV-10", "Broken", reason="r", details={"table": {"columns": "x", "rows": 3}})
    assert '<table class="details">' not in format_html(report_with(broken))


def test_plots_are_embedded_pngs_from_series_and_groups() -> None:
    series = Item.measured(
        "EV-4.allreduce.busbw", "EV-4", "All-reduce bus bandwidth", value=2.5, unit="GB/s", method="gloo",
        details={"series": [{"x": [1024, 4096, 16384], "y": [0.5, 1.5, 2.5], "x_label": "bytes", "y_label": "GB/s",
                             "label": "busbw", "log_x": True},
                            {"x": [1024, 4096, 16384], "y": [0.3, 1.0, 1.7], "label": "algbw"}]},
    )
    bars = Item.measured("EV-11.d", "EV-11", "durations", value=3.0, unit="s", method="clock",
                         details={"series": {"x": ["EV-1.a", "EV-2.b"], "y": [1.0, 2.0], "kind": "bar"}})
    broken = Item.measured("EV-5.x", "EV-5", "bad series", value=1.0, unit="ms", method="m",
                           details={"series": {"x": [1, 2], "y": [1]}})
    report = report_with(*GEMM, series, bars, broken)
    plots = render_plots(report)
    assert [p.title for p in plots["EV-2"]] == ["EV-2: figures in GFLOP/s"]
    assert [p.title for p in plots["EV-4"]] == ["All-reduce bus bandwidth"]
    assert [p.title for p in plots["EV-11"]] == ["durations"]
    assert plots["EV-5"] == []  # x and y of different lengths: no plot, no crash
    png = base64.b64decode(plots["EV-4"][0].png_base64)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    page = format_html(report, plots=plots)
    assert page.count('src="data:image/png;base64,') == 3


def test_telemetry_is_plotted_in_ev7_with_unavailable_reasons() -> None:
    telemetry = {"device": "cpu:0", "interval_s": 0.2, "points": 4,
                 "series": {"t_s": [0.2, 0.4, 0.6, 0.8], "utilization_pct": [10.0, 90.0, 95.0, 20.0],
                            "power_w": [None] * 4, "temperature_c": [None] * 4, "clock_mhz": [2600.0] * 4},
                 "unavailable": {"power_w": "RAPL not readable: permission denied"}}
    summary = {"tasks": [{"id": "EV-2.gemm", "start_offset_s": 0.3}]}
    plots = render_plots(report_with(telemetry=telemetry, summary=summary))
    assert plots["EV-7"][0].title == "Device telemetry over the run"
    assert "permission denied" in plots["EV-7"][0].caption


def test_check_finds_external_references_and_missing_sections() -> None:
    page = format_html(report_with(*GEMM))
    bad = page.replace("</head>", '<link rel="stylesheet" href="https://cdn.example/x.css"></head>')
    bad = bad.replace('<section class="clause" id="EV-9"', '<section class="other" id="EV-9"')
    check = check_html(bad)
    assert check.external_refs == 1 and len(check.sections) == 10 and not check.ok
    item = check.to_item()
    assert item.status == "fail" and "1 external reference" in item.reason and "10 of 11" in item.reason


def test_write_html_is_atomic_and_self_contained(tmp_path: Path) -> None:
    path = write_html(report_with(*GEMM), tmp_path / "r" / "report.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    assert not re.search(r"(src|href)=[\"']?https?://", text)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
