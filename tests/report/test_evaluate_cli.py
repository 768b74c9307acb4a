"""`zhisuan evaluate` and `zhisuan report` end to end through `python -m zhisuan` (EV-1 only: fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zhisuan.bench.schema import validate_report


def zhisuan(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ev1_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("eval") / "rep"
    return out, zhisuan("evaluate", "--only", "EV-1", "-o", str(out), "--json")


def test_evaluate_writes_json_and_html_and_exits_0(ev1_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = ev1_run
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["report_json"] == str(out / "report.json")
    data = json.loads((out / "report.json").read_text())
    assert validate_report(data) == []
    assert data["suite"] == "quick" and data["summary"]["counts"]["fail"] == 0
    assert data["environment"]["command"] == ["zhisuan", "evaluate", "--only", "EV-1", "-o", str(out), "--json"]
    ids = {i["id"] for i in data["items"]}
    assert {"EV-1.device.name", "EV-1.env.threads", "EV-11.report.json", "EV-11.report.html"} <= ids
    assert {i["clause"] for i in data["items"]} == {"EV-1", "EV-11"}
    assert (out / "report.html").read_text().count('<section class="clause"') == 11
    assert sorted(p.name for p in (out / ".partial").iterdir()) == ["EV-1.device.json", "EV-1.environment.json",
                                                                     "run.json"]


def test_usage_and_input_errors_are_one_line(ev1_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = ev1_run
    proc = zhisuan("evaluate", "--suite", "nightly")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: unknown suite 'nightly'; choose one of: quick, standard, full"
    proc = zhisuan("evaluate", "--only", "EV-1", "-o", str(out), "--resume", "--seed", "5")
    assert proc.returncode == 1  # found by reading DIR: an input error, not a usage error
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a run of suite 'quick'" in lines[0] and "Traceback" not in proc.stderr


def test_report_show_and_compare(ev1_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    out, _ = ev1_run
    proc = zhisuan("report", "show", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert [c["clause"] for c in shown["clauses"]] == [f"EV-{i}" for i in range(1, 12)]
    assert shown["clauses"][0]["counts"]["pass"] > 0

    data = json.loads((out / "report.json").read_text())
    for item in data["items"]:
        if item["id"] == "EV-11.suite.duration":
            item["value"] = item["value"] * 2 + 1.0  # the other "device" took longer: worse
    other = tmp_path / "other" / "report.json"
    other.parent.mkdir()
    other.write_text(json.dumps(data))
    html = tmp_path / "cmp.html"
    proc = zhisuan("report", "compare", str(out / "report.json"), str(other), "-o", str(html), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    row = next(r for r in result["rows"] if r["id"] == "EV-11.suite.duration")
    assert row["higher_is_better"] is False and row["cells"][1]["verdict"] == "worse"
    assert html.read_text().startswith("<!DOCTYPE html>")

    proc = zhisuan("report", "show", str(tmp_path / "missing.json"))
    assert proc.returncode == 1 and proc.stderr.startswith("error: no such report")


def test_ctrl_c_saves_finished_tasks_exits_130_and_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    code = (
        "import sys\n"
        "from zhisuan.bench.tasks import task\n"
        "@task('EV-2.zz_interrupt', clause='EV-2', est_s={'quick': 1})\n"
        "def interrupt(ctx):\n"
        "    raise KeyboardInterrupt\n"
        "from zhisuan.cli.app import main\n"
        f"main(['evaluate', '--only', 'EV-1,EV-2.zz_interrupt', '-o', {str(out)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 130, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: 2 task(s) finished") and last.endswith("--resume")
    assert sorted(p.name for p in (out / ".partial").iterdir()) == ["EV-1.device.json", "EV-1.environment.json",
                                                                     "run.json"]
    assert not (out / "report.json").exists()
