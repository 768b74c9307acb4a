"""The report data model: round trip, the JSON Schema, senses of units, plain JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zhisuan.bench.schema import (
    SCHEMA_VERSION,
    Item,
    Report,
    higher_is_better,
    json_schema,
    load_report,
    plain_json,
    validate_report,
)
from zhisuan.errors import UserError


def sample_report() -> Report:
    items = (
        Item.measured("EV-2.gemm.fp32", "EV-2", "Dense GEMM FP32", value=120.5, unit="GFLOP/s",
                      method="torch.matmul", samples=[118.0, 120.5, 121.0], reference=150.0,
                      reference_source="2 cores x 2.6 GHz x 32 FLOP/cycle",
                      details={"series": {"x": [256, 512], "y": [90.0, 120.5]}}),
        Item.skipped("EV-3.h2d.pinned", "EV-3", "Host to device, pinned", reason="no GPU", unit="GB/s"),
        Item.failed("EV-9.sdc", "EV-9", "Silent data corruption", reason="2 mismatches", method="repeat GEMM"),
    )
    env = {"command": ["zhisuan", "evaluate"], "seed": 0, "threads": {"requested": 2}, "hostname": "h",
           "collected_at": "2026-01-01T00:00:00+00:00", "unavailable": {"clocks.cpu.governor": "no cpufreq"},
           "device": {"id": "cpu:0", "kind": "cpu", "name": "Test CPU"}}
    return Report(SCHEMA_VERSION, "quick", env, items, "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00",
                  telemetry={"device": "cpu:0", "interval_s": 0.2})


def test_round_trip_through_json_file(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report.to_dict()))
    again = load_report(path)
    assert again.items == report.items and again.environment == report.environment
    assert again.telemetry == report.telemetry and again.finished_at == report.finished_at
    assert again.items[0].ratio_to_reference == pytest.approx(120.5 / 150.0)
    assert again.summary["counts"] == {"pass": 1, "fail": 1, "skip": 1, "disturbed": 0}  # computed when it was written
    assert again.to_dict() == report.to_dict()
    assert again.device_name == "Test CPU"


def test_a_valid_report_passes_the_schema() -> None:
    data = sample_report().to_dict()
    assert validate_report(data) == []
    assert json_schema()["properties"]["schema_version"]["pattern"].startswith("^1")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["items"][1].update(reason=None), "None is not of type 'string' (at /items/1/reason)"),
        (lambda d: d["items"][0].update(clause="EV-12"), "is not one of"),
        (lambda d: d["items"][0].update(repeats=-1), "less than the minimum"),
        (lambda d: d["items"].append(dict(d["items"][0])), "appears twice"),
        (lambda d: d["items"][0].update(id="EV-3.gemm"), "is not in its clause 'EV-2'"),
        (lambda d: d.pop("environment"), "'environment' is a required property"),
        (lambda d: d["items"][0]["spread"].pop("median"), "'median' is a required property"),
    ],
)
def test_schema_violations_are_found(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(sample_report().to_dict()))
    mutate(data)
    problems = validate_report(data)
    assert any(message in p for p in problems), problems


def test_load_report_errors_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such report"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="is not JSON"):
        load_report(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a zhisuan report"):
        load_report(tmp_path / "other.json")
    (tmp_path / "future.json").write_text(json.dumps({**sample_report().to_dict(), "schema_version": "2.0"}))
    with pytest.raises(UserError, match=r"schema 2\.0 is not readable"):
        load_report(tmp_path / "future.json")
    with pytest.raises(UserError, match="is a directory"):
        load_report(tmp_path)


@pytest.mark.parametrize(
    ("unit", "details", "expected"),
    [
        ("GFLOP/s", None, True), ("GB/s", None, True), ("samples/s", None, True), ("TOPS", None, True),
        ("QPS", None, True), ("tokens/s", None, True), ("GFLOP/s/W", None, True), ("samples/J", None, True),
        ("ms", None, False), ("s", None, False), ("us", None, False), ("J", None, False),
        ("J/sample", None, False), ("ms/token", None, False),
        ("%", None, None), ("", None, None), ("items", None, None), ("W", None, None),
        ("%", {"higher_is_better": True}, True), ("GB/s", {"higher_is_better": False}, False),
    ],
)
def test_sense_of_a_unit(unit: str, details: dict | None, expected: bool | None) -> None:
    assert higher_is_better(unit, details) is expected


def test_plain_json_makes_numpy_and_nan_plain() -> None:
    out = plain_json({"a": np.float32(1.5), "b": np.arange(2), "c": (1, float("inf")), "d": np.bool_(True)})
    assert out == {"a": 1.5, "b": [0, 1], "c": [1, None], "d": True}
    json.dumps(out, allow_nan=False)


def test_skip_and_fail_need_a_reason() -> None:
    with pytest.raises(UserError, match="needs a reason"):
        Item("EV-2.x", "EV-2", "x", None, "", "", 0, None, "fail")
