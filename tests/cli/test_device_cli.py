"""`zhisuan device list | info | monitor` end to end: the real CLI, real JSON, real errors."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from zhisuan.cli import app as app_module

runner = CliRunner()


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as on a wide terminal, so names are not wrapped across lines."""
    from zhisuan.cli import _common

    monkeypatch.setattr(_common.console, "width", 200)


def _zhisuan(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True, timeout=timeout
    )


def test_device_list_json_has_the_cpu() -> None:
    proc = _zhisuan("device", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    devices = json.loads(proc.stdout)
    assert isinstance(devices, list)
    cpu = next(d for d in devices if d["kind"] == "cpu")
    for key in ("kind", "index", "name", "memory_bytes", "features", "precisions", "backends", "details"):
        assert key in cpu
    assert cpu["index"] == 0 and cpu["memory_bytes"] > 0 and "fp32" in cpu["precisions"]
    assert {"runtime": "onnxruntime", "version": cpu["backends"][0]["version"], "device": "cpu"} in cpu[
        "backends"
    ]
    assert cpu["details"]["threads"] >= 1 and "L1d" in cpu["details"]["cache_bytes"]


@pytest.mark.usefixtures("wide_console")
def test_device_list_table_names_the_null_device_only_when_asked() -> None:
    result = runner.invoke(app_module.app, ["device", "list", "--kind", "null"])
    assert result.exit_code == 0, result.output
    assert "null:0" in result.output and "NULL device 0" in result.output
    assert "cpu:0" not in result.output


def test_device_info_json_of_one_device() -> None:
    result = runner.invoke(app_module.app, ["device", "info", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["id"] == "cpu:0" and info["details"]["caches"]


def test_monitor_once_json() -> None:
    result = runner.invoke(app_module.app, ["device", "monitor", "--once", "--json", "--interval", "0.2"])
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)
    cpu = next(d for d in snapshot["devices"] if d["kind"] == "cpu")
    assert cpu["memory_total_bytes"] > 0 and cpu["clocks_mhz"] is not None
    for metric in ("utilization_pct", "power_w", "energy_j", "temperature_c"):
        assert cpu[metric] is not None or cpu["unavailable"][metric]  # a number, or None with a reason


def test_monitor_streams_json_lines_and_a_summary() -> None:
    args = ["device", "monitor", "--kind", "null", "--json", "--interval", "0.1", "--duration", "0.45"]
    result = runner.invoke(app_module.app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["type"] for line in lines[:-1]] == ["snapshot"] * (len(lines) - 1)
    assert len(lines) >= 4
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["snapshots"] == len(lines) - 1
    (device,) = summary["devices"]
    assert device["mean_power_w"] == 100.0 and device["energy_j"] == pytest.approx(45, rel=0.3)


@pytest.mark.usefixtures("wide_console")
def test_monitor_live_table_then_summary() -> None:
    result = runner.invoke(
        app_module.app, ["device", "monitor", "--kind", "null", "--interval", "0.1", "--duration", "0.3"]
    )
    assert result.exit_code == 0, result.output
    assert "NULL device 0" in result.output and "100.0 W" in result.output
    assert re.search(r"Summary: \d+ samples over 0\.\d s", result.output)


def test_monitor_prometheus_end_to_end() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhisuan", "device", "monitor", "--kind", "null", "--json",
         "--interval", "0.1", "--duration", "20", "--prometheus", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        url = re.search(r"http://\S+/metrics", line)
        assert url, line
        body = ""
        deadline = time.monotonic() + 10
        while "zhisuan_device_power_watts" not in body and time.monotonic() < deadline:
            time.sleep(0.1)
            body = urllib.request.urlopen(url.group(0), timeout=5).read().decode()
        assert 'zhisuan_device_power_watts{index="0",kind="null",name="NULL device 0"} 100.0' in body
        assert "zhisuan_device_temperature_celsius{" not in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        app_module.main(args)
    return int(exc.value.code or 0), capsys.readouterr().err.strip().splitlines()


def test_bad_device_index_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_main(["device", "info", "99"], capsys)
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: no device 99: there are")


def test_port_in_use_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = _run_main(
            ["device", "monitor", "--kind", "null", "--json", "--duration", "0.2", "--prometheus", str(port)],
            capsys,
        )
    assert code == 1
    assert err == [f"error: port {port} is in use on 127.0.0.1; choose another with --prometheus PORT"]


def test_unknown_kind_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_main(["device", "list", "--kind", "tpu"], capsys)
    assert code == 1 and err == ["error: unknown device kind 'tpu'; choose from: cpu, cuda, null"]
