from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zhisuan.doctor import Check, run_doctor
from zhisuan.doctor.checks import Skip


def test_required_core_checks_pass_here() -> None:
    report = run_doctor(only=["python", "numpy", "onnx", "onnxruntime", "cache"])
    assert report.ok, report.to_dict()
    by_name = {c.name: c for c in report.checks}
    assert "matmul max abs error" in by_name["numpy"].detail
    assert by_name["onnxruntime"].version


def test_a_failing_required_check_fails_the_report_but_not_the_run() -> None:
    def broken() -> tuple[str | None, str]:
        raise RuntimeError("library crashed\nsecond line")

    def absent() -> tuple[str | None, str]:
        raise Skip("not installed (install with: pip install x)")

    def optional_broken() -> tuple[str | None, str]:
        raise ValueError("bad")

    seen = []
    report = run_doctor(
        [Check("a", True, broken), Check("b", False, absent), Check("c", False, optional_broken)],
        on_result=seen.append,
    )
    assert [c.status for c in report.checks] == ["fail", "skip", "fail"]
    assert report.checks[0].detail == "RuntimeError: library crashed"  # one line
    assert not report.ok
    assert len(seen) == 3
    optional_only = run_doctor([Check("b", False, absent), Check("c", False, optional_broken)])
    assert optional_only.ok  # optional parts may fail without failing the environment


def test_doctor_cli_json_exit_codes() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "zhisuan", "doctor", "--only", "numpy", "--only", "python", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["counts"]["pass"] == 2


@pytest.mark.slow
def test_full_doctor_runs_every_check() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zhisuan", "doctor", "--json"], capture_output=True, text=True, timeout=600
    )
    data = json.loads(proc.stdout)
    names = {c["name"] for c in data["checks"]}
    assert {"python", "numpy", "torch", "onnx", "onnxruntime", "openvino", "nvml", "devices", "zoo-model"} <= names
    for check in data["checks"]:
        assert check["status"] in ("pass", "fail", "skip")
        assert check["detail"]
    assert proc.returncode == (0 if data["ok"] else 1)
    assert data["ok"], [c for c in data["checks"] if c["status"] == "fail"]
