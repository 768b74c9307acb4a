"""Items measured under interference: status 'disturbed' in the schema, report.html and the CLI table."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rich.console import Console

from zhisuan.bench.interference import Interference
from zhisuan.bench.schema import SCHEMA_VERSION, Item, Report, summarize, validate_report
from zhisuan.cli.report import items_table, summary_table
from zhisuan.errors import UserError
from zhisuan.report.html import format_html

ENV = {"command": ["zhisuan", "evaluate"], "seed": 0, "threads": {"intra_op": 2},
       "device": {"id": "cpu:0", "kind": "cpu", "name": "Test CPU"}, "hostname": "h", "collected_at": "t",
       "unavailable": {}}


def _record(verdict: str = "disturbed", other: float = 0.63) -> dict[str, Any]:
    reasons = (f"other processes took {other:.0%} of 2 core(s) (threshold 25%)",) if verdict == "disturbed" else ()
    return Interference(verdict=verdict, reasons=reasons, duration_s=12.0, samples=48, cpus=2,  # type: ignore[arg-type]
                        other_cpu_share=other, other_cpu_share_max=0.9, own_cpu_share=0.4, steal_share=0.0,
                        load1_max=3.2, other_cpu_s=15.1, own_cpu_s=9.6).to_dict()


def _report() -> Report:
    server = Item.failed("EV-5.m.server.samples_per_s", "EV-5", "Server throughput", reason="LoadGen result INVALID",
                         value=41.0, unit="samples/s", method="LoadGen Server")
    items = (
        server.under_interference(_record()),
        Item.measured("EV-2.gemm.fp32", "EV-2", "GEMM", value=90.0, unit="GFLOP/s", method="torch.matmul",
                      samples=[89.0, 90.0, 91.0]).under_interference(_record("quiet", 0.02)),
        Item.failed("EV-8.zoo.m", "EV-8", "Results", reason="wrong results", method="fake").under_interference(_record()),
    )
    return Report(SCHEMA_VERSION, "quick", ENV, items, "2026-12-04T10:00:00", "2026-12-04T10:01:00",
                  summary=summarize(items), interference=_record())


def test_a_timed_fail_under_interference_becomes_disturbed_and_keeps_its_figure() -> None:
    report = _report()
    server, gemm, results = report.items
    assert server.status == "disturbed" and server.value == 41.0
    assert "LoadGen result INVALID" in server.reason and "other processes took 63%" in server.reason
    assert gemm.status == "pass" and gemm.interference["verdict"] == "quiet"
    assert results.status == "fail" and results.interference is None  # EV-8 is not timed
    assert report.summary["counts"] == {"pass": 1, "fail": 1, "skip": 0, "disturbed": 1}
    # a fail that no other job can change stays a fail
    wrong = Item.failed("EV-9.sdc", "EV-9", "SDC", reason="3 elements", method="m", details={"timed": False})
    assert wrong.under_interference(_record()).status == "fail"
    # a quiet window keeps a fail a fail
    assert Item.failed("EV-2.x", "EV-2", "x", reason="r").under_interference(_record("quiet")).status == "fail"
    # the item's own record (e.g. its LoadGen scenario) wins over the task's
    own = Item.failed("EV-5.y", "EV-5", "y", reason="r").under_interference(_record("quiet"))
    assert own.under_interference(_record()).status == "fail"


def test_the_schema_accepts_the_new_fields_and_checks_them() -> None:
    data = _report().to_dict()
    assert data["schema_version"] == "1.1" and validate_report(data) == []
    assert data["items"][0]["interference"]["other_cpu_share"] == 0.63
    assert Report.from_dict(data).to_dict() == data

    bad = copy.deepcopy(data)
    bad["items"][0]["interference"] = None  # disturbed without its record
    assert any("interference" in p for p in validate_report(bad))
    bad = copy.deepcopy(data)
    bad["items"][0]["interference"]["verdict"] = "quiet"  # disturbed, but the record says quiet
    assert validate_report(bad)
    bad = copy.deepcopy(data)
    bad["items"][1]["interference"]["other_cpu_share"] = 1.7  # a share is a fraction
    assert validate_report(bad)
    bad = copy.deepcopy(data)
    bad["interference"]["verdict"] = "noisy"
    assert validate_report(bad)
    # a report of schema 1.0 (no interference anywhere) is still valid and readable
    old = copy.deepcopy(data)
    old["schema_version"] = "1.0"
    del old["interference"]
    for item in old["items"][1:]:
        del item["interference"]
    old["items"] = old["items"][1:]
    assert validate_report(old) == [] and Report.from_dict(old).interference is None


def test_a_disturbed_item_needs_a_reason() -> None:
    with pytest.raises(UserError, match="needs a reason"):
        Item(id="EV-5.x", clause="EV-5", name="x", value=1, unit="", method="", repeats=1, spread=None,
             status="disturbed")


def test_report_html_shows_disturbed_items_distinctly() -> None:
    html = format_html(_report(), plots={})
    assert '<tr class="disturbed" id="EV-5.m.server.samples_per_s">' in html
    assert '<span class="badge disturbed">disturbed</span>' in html and "1 disturbed</span>" in html
    assert ".badge.disturbed{" in html and "tr.disturbed td{" in html
    assert ('<div class="interference disturbed">interference: disturbed — other processes 63% of 2 core(s), '
            "steal 0%, load1 3.2</div>") in html
    assert '<div class="interference quiet">interference: quiet' in html
    assert "The machine was not quiet when the run started" in html
    assert "1 item(s) failed while other jobs took the machine" in html
    assert "<th>disturbed</th>" in html


def test_the_cli_tables_show_disturbed() -> None:
    console = Console(width=200, record=True)
    console.print(summary_table(_report()))
    console.print(items_table(_report()))
    text = console.export_text()
    assert "disturbed" in text.splitlines()[2]  # a column of the summary table
    assert "EV-5.m.server.samples_per_s" in text
    quiet = Report(SCHEMA_VERSION, "quick", ENV, _report().items[1:], "t")
    console = Console(width=200, record=True)
    console.print(summary_table(quiet))
    assert "disturbed" not in console.export_text()  # no column when nothing was disturbed
