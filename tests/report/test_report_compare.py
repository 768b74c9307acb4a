"""Comparing reports: ratios against the first, better/worse by each unit's sense, missing items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhisuan.bench.schema import SCHEMA_VERSION, Item, Report
from zhisuan.errors import UserError
from zhisuan.report.compare import compare_files, compare_reports, format_compare_html


def report(device: str, **values: float) -> Report:
    units = {"gemm": ("EV-2", "GFLOP/s"), "p99": ("EV-5", "ms"), "energy": ("EV-7", "J"),
             "util": ("EV-9", "%"), "drift": ("EV-9", "%")}
    items = []
    for key, value in values.items():
        clause, unit = units[key]
        details = {"higher_is_better": False} if key == "drift" else {}
        items.append(Item.measured(f"{clause}.{key}", clause, key, value=value, unit=unit, method="m",
                                   samples=[value, value], details=details))
    env = {"device": {"id": "x:0", "name": device}}
    return Report(SCHEMA_VERSION, "quick", env, tuple(items), "2026-01-01T00:00:00")


def test_ratios_and_verdicts_follow_the_sense_of_each_unit() -> None:
    a = report("Card A", gemm=100.0, p99=10.0, energy=50.0, util=50.0, drift=2.0)
    b = report("Card B", gemm=150.0, p99=12.0, energy=25.0, util=80.0, drift=1.0)
    rows = {r.id: r for r in compare_reports([a, b]).rows}
    assert rows["EV-2.gemm"].cells[1].ratio == pytest.approx(1.5) and rows["EV-2.gemm"].cells[1].verdict == "better"
    assert rows["EV-5.p99"].cells[1].ratio == pytest.approx(1.2) and rows["EV-5.p99"].cells[1].verdict == "worse"
    assert rows["EV-7.energy"].cells[1].verdict == "better"  # half the joules
    assert rows["EV-9.util"].cells[1].verdict is None and rows["EV-9.util"].higher_is_better is None  # neutral
    assert rows["EV-9.drift"].cells[1].verdict == "better"  # explicit hint: lower drift is better
    assert rows["EV-2.gemm"].cells[0].ratio is None  # the baseline has no ratio to itself


def test_small_differences_are_the_same_and_missing_items_are_shown() -> None:
    a = report("Card A", gemm=100.0, p99=10.0)
    b = report("Card B", gemm=102.0)
    c = report("Card C", gemm=90.0, p99=9.0, energy=1.0)
    comparison = compare_reports([a, b, c], tolerance=0.03)
    rows = {r.id: r for r in comparison.rows}
    assert rows["EV-2.gemm"].cells[1].verdict == "same"
    assert rows["EV-5.p99"].cells[1].missing and rows["EV-5.p99"].cells[1].value is None
    assert rows["EV-5.p99"].cells[2].verdict == "better"
    assert rows["EV-7.energy"].cells[0].missing and rows["EV-7.energy"].cells[2].ratio is None  # no baseline
    assert [r.id for r in comparison.rows] == ["EV-2.gemm", "EV-5.p99", "EV-7.energy"]
    assert comparison.verdict_counts()[1] == {"better": 0, "worse": 0, "same": 1, "missing": 2}


def test_same_device_names_get_distinct_labels_and_errors_are_user_errors(tmp_path: Path) -> None:
    paths = []
    for name, value in (("run1", 100.0), ("run2", 110.0)):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "report.json"
        path.write_text(json.dumps(report("Same CPU", gemm=value).to_dict()))
        paths.append(path)
    comparison = compare_files(paths)
    assert comparison.labels == ("Same CPU (run1)", "Same CPU (run2)")
    assert compare_files([tmp_path / "run1", tmp_path / "run2"]).labels == comparison.labels  # directories work
    with pytest.raises(UserError, match="at least two"):
        compare_files(paths[:1])
    with pytest.raises(UserError, match="no such report"):
        compare_files([paths[0], tmp_path / "nope.json"])


def test_compare_html_is_escaped_and_marks_better_and_worse() -> None:
    a = report("<A>", gemm=100.0, p99=10.0)
    b = report("B&B", gemm=150.0, p99=20.0)
    page = format_compare_html(compare_reports([a, b]))
    assert "&lt;A&gt;" in page and "B&amp;B" in page and "<A>" not in page
    assert '<td class="better">' in page and '<td class="worse">' in page
    assert 'src="data:image/png;base64,' in page and "https://" not in page
