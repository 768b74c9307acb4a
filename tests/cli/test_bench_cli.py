"""``zhisuan bench`` end to end: the real CLI in a subprocess on a tiny ONNX model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from busy_helpers import foreign_busy
from loadgen_helpers import mlp_onnx

pytest.importorskip("mlperf_loadgen")


def _zhisuan(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_onnx(tmp_path_factory.mktemp("bench-cli") / "tiny.onnx", inputs=512, hidden=2048)


def test_offline_json(tiny: Path, tmp_path: Path) -> None:
    proc = _zhisuan("bench", str(tiny), "--scenario", "offline", "--duration", "1", "--threads", "1",
                    "--random", "16", "--logs", str(tmp_path / "logs"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("scenario", "valid", "samples_per_s", "p50_latency_ms", "p90_latency_ms", "p99_latency_ms"):
        assert key in data
    assert data["scenario"] == "offline" and data["valid"] is True and data["samples_per_s"] > 0
    assert data["threads"] == 1 and data["runtime"]["runtime"] == "onnxruntime"
    assert data["settings"]["offline_expected_qps"] > 0 and data["calibration"]["timings"][0]["batch"] == 1
    assert (tmp_path / "logs" / "offline-attempt1" / "mlperf_log_summary.txt").is_file()
    # the machine was sampled before and during the run
    assert data["quiet_check"]["verdict"] in ("quiet", "disturbed") and data["quiet_check"]["duration_s"] >= 0.5
    assert data["interference"]["verdict"] in ("quiet", "disturbed") and data["interference"]["samples"] >= 2


def test_a_busy_machine_is_warned_about_and_recorded(tiny: Path, tmp_path: Path) -> None:
    with foreign_busy(30.0, tmp_path / "pids"):
        proc = _zhisuan("bench", str(tiny), "--scenario", "offline", "--duration", "1", "--threads", "1",
                        "--random", "16", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the machine is not quiet (other processes took" in proc.stderr
    data = json.loads(proc.stdout)  # stdout stays JSON
    assert data["quiet_check"]["verdict"] == "disturbed"
    assert data["interference"]["verdict"] == "disturbed" and data["interference"]["other_cpu_share"] >= 0.25
    assert any(n.startswith("measured while the machine was disturbed") for n in data["notes"])


def test_singlestream_table(tiny: Path) -> None:
    proc = _zhisuan("bench", str(tiny), "-s", "singlestream", "--duration", "0.5", "--threads", "1", "--random", "8")
    assert proc.returncode == 0, proc.stderr
    assert "VALID" in proc.stdout and "p99 latency (ms)" in proc.stdout
    assert "not an official MLPerf result" in proc.stdout
    assert "interference during the run" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["no-such-file.onnx"], "model file not found", 1),
        (["{tiny}", "--runtime", "tensorrt"], "tensorrt is unavailable", 1),
        (["{tiny}", "--data", "missing-dir", "--json"], "not found", 1),
        # usage errors (README exit table): the command line alone is wrong
        (["{tiny}", "--scenario", "burst"], "unknown scenario", 2),
        (["{tiny}", "--batch", "zero"], "--batch must be a positive integer or 'auto'", 2),
        (["{tiny}", "--duration", "-1"], "'--duration': -1.0 is not above 0", 2),
        (["{tiny}", "--random", "0"], "'--random'", 2),
        (["{tiny}", "--samples-per-query", "0"], "'--samples-per-query'", 2),
        (["{tiny}", "--threads", "0"], "'--threads'", 2),
    ],
)
def test_errors_are_one_line_with_the_documented_exit(tiny: Path, args: list[str], message: str, code: int) -> None:
    proc = _zhisuan("bench", *[a.format(tiny=tiny) for a in args])
    assert proc.returncode == code, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
