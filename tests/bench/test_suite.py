"""The suite runner with fake tasks: failures become items, results are saved, runs resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zhisuan.bench import suite as suite_mod
from zhisuan.bench.interference import Interference
from zhisuan.bench.schema import Item, load_report, validate_report
from zhisuan.bench.suite import (
    PartialStore,
    SuiteConfig,
    SuiteEvent,
    SuiteInterrupted,
    choose_device,
    run_suite,
    select_tasks,
)
from zhisuan.bench.tasks import EvalContext, Task
from zhisuan.device import DeviceInfo, DeviceList
from zhisuan.errors import UserError
from zhisuan.report.html import write_suite_html

CPU = DeviceInfo("cpu", 0, "Test CPU", 8 << 30, None, ("avx2",), ("fp32",), "Linux test",
                 details={"physical_cores": 2, "threads": 2})
GPU = DeviceInfo("cuda", 0, "Test GPU", 16 << 30, "HBM", ("sm_90",), ("fp32", "fp16"), "555.1")
NULL = DeviceInfo("null", 0, "NULL device 0", 1 << 30, "none", ("null",), ("fp32",), "null")


def devices(*found: DeviceInfo) -> DeviceList:
    return DeviceList(found or (CPU,), {} if any(d.kind == "cuda" for d in found) else {"cuda": "no driver here"})


def make_task(id: str, fn: Callable[[EvalContext], list[Any]], *, suites: tuple[str, ...] = ("quick",),
              kinds: tuple[str, ...] = ()) -> Task:
    return Task(id=id, clause=id.split(".")[0], suites=suites, run=fn, title=f"task {id}",
                est_s={"quick": 1.0}, device_kinds=kinds)


class Calls:
    """Counts how often each fake task ran."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def passing(self, id: str, value: float = 1.0) -> Callable[[EvalContext], list[Any]]:
        def run(ctx: EvalContext) -> list[Any]:
            self.count[id] = self.count.get(id, 0) + 1
            ctx.progress("half way", done=1, total=2)
            return [Item.measured(f"{id}.x", id.split(".")[0], f"{id} figure", value=value, unit="GB/s",
                                  method="fake", samples=[value * 0.99, value, value * 1.01])]
        return run


def fake_tasks(calls: Calls) -> dict[str, Task]:
    def failing(ctx: EvalContext) -> list[Any]:
        return [Item.failed("EV-9.check", "EV-9", "A check", reason="mismatch in 3 of 100 runs", method="fake")]

    def raising(ctx: EvalContext) -> list[Any]:
        raise ValueError("broken kernel")

    def user_error(ctx: EvalContext) -> list[Any]:
        raise UserError("openvino is unavailable: not installed")

    def skipping(ctx: EvalContext) -> list[Any]:
        return [Item.skipped("EV-3.h2d", "EV-3", "Host to device", reason="no GPU on this machine")]

    def not_items(ctx: EvalContext) -> Any:
        return {"value": 1}

    tasks = [
        make_task("EV-2.a", calls.passing("EV-2.a")),
        make_task("EV-3.skip", skipping),
        make_task("EV-4.raise", raising),
        make_task("EV-5.user", user_error),
        make_task("EV-9.fail", failing),
        make_task("EV-10.bad", not_items),
        make_task("EV-6.gpu_only", calls.passing("EV-6.gpu_only"), kinds=("cuda",)),
        make_task("EV-8.full_only", calls.passing("EV-8.full_only"), suites=("full",)),
    ]
    return {t.id: t for t in tasks}


class FakeSampler:
    """An interference sampler that reads the same verdict every time (the real machine is shared)."""

    def __init__(self, verdict: str = "quiet", other: float = 0.02) -> None:
        self.verdict, self.other = verdict, other
        self.started = self.stopped = 0

    def __call__(self) -> FakeSampler:  # the factory run_suite calls, once per task and for the check
        return self

    def start(self) -> FakeSampler:
        self.started += 1
        return self

    def stop(self) -> Interference:
        self.stopped += 1
        reasons = (f"other processes took {self.other:.0%} of 2 core(s) (threshold 25%)",) \
            if self.verdict == "disturbed" else ()
        return Interference(verdict=self.verdict, reasons=reasons, duration_s=1.0, samples=4, cpus=2,  # type: ignore[arg-type]
                            other_cpu_share=self.other, other_cpu_share_max=self.other, own_cpu_share=0.5,
                            steal_share=0.0, load1_max=2.5)


def run(tmp_path: Path, tasks: dict[str, Task], events: list[SuiteEvent] | None = None,
        sampler: FakeSampler | None = None, **config: Any) -> Any:
    cfg = SuiteConfig(out_dir=tmp_path / "out", telemetry=config.pop("telemetry", False),
                      quiet_check_s=config.pop("quiet_check_s", 0.0), **config)
    report = run_suite(cfg, progress=events.append if events is not None else None, tasks=tasks, devices=devices(),
                       interference=sampler or FakeSampler())
    return write_suite_html(report, cfg.out_dir)


def test_failures_become_items_and_the_run_goes_on(tmp_path: Path) -> None:
    calls = Calls()
    events: list[SuiteEvent] = []
    report = run(tmp_path, fake_tasks(calls), events)
    by_id = {i.id: i for i in report.items}
    assert by_id["EV-2.a.x"].status == "pass" and by_id["EV-2.a.x"].spread["median"] == 1.0
    assert by_id["EV-3.h2d"].status == "skip"
    crash = by_id["EV-4.raise"]
    assert crash.status == "fail" and crash.reason == "the task crashed: ValueError: broken kernel"
    assert "ValueError" in crash.details["traceback"]
    assert by_id["EV-5.user"].reason == "the task crashed: openvino is unavailable: not installed"
    assert by_id["EV-9.check"].status == "fail"
    assert "not a list of Item" in by_id["EV-10.bad"].reason
    # tasks of another device kind or suite did not run
    assert "EV-6.gpu_only" not in calls.count and "EV-8.full_only" not in calls.count
    # the report on disk is the returned one, valid against the schema, and the HTML exists
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert validate_report(data) == []
    assert load_report(tmp_path / "out" / "report.json").to_dict() == report.to_dict()
    assert (tmp_path / "out" / "report.html").read_text().count('<section class="clause"') == 11
    assert report.summary["counts"]["fail"] == 5  # 4 tasks + the EV-11 coverage (clauses missing)
    tasks = {t["id"]: t for t in report.summary["tasks"]}
    assert set(tasks) == {"EV-2.a", "EV-3.skip", "EV-4.raise", "EV-5.user", "EV-9.fail", "EV-10.bad"}
    assert all(t["duration_s"] >= 0 for t in tasks.values()) and tasks["EV-4.raise"]["crashed"]
    # each finished task was saved with the run's fingerprint and its duration
    saved = json.loads((tmp_path / "out" / ".partial" / "EV-2.a.json").read_text())
    assert saved["duration_s"] >= 0 and saved["items"][0]["id"] == "EV-2.a.x"
    assert saved["fingerprint"] == json.loads((tmp_path / "out" / ".partial" / "run.json").read_text())[
        "fingerprint"]["digest"]
    kinds = [e.kind for e in events]
    assert kinds[0] == "suite_start" and kinds[-1] == "suite_end"
    assert kinds.count("task_start") == kinds.count("task_end") == 6
    progress = [e for e in events if e.kind == "task_progress"]
    assert progress[0].task_id == "EV-2.a" and progress[0].done == 1 and progress[0].text == "half way"
    assert progress[0].task_total == 2


def test_ev11_items_describe_the_report(tmp_path: Path) -> None:
    report = run(tmp_path, fake_tasks(Calls()))
    by_id = {i.id: i for i in report.items}
    assert by_id["EV-11.report.json"].status == "pass"
    assert by_id["EV-11.report.json"].value == len(report.items)
    html_item = by_id["EV-11.report.html"]
    assert html_item.status == "pass" and html_item.value == 11 and html_item.details["external_refs"] == 0
    coverage = by_id["EV-11.coverage"]
    # EV-1, EV-6 (GPU only), EV-7 and EV-8 (full only) have no item here: coverage fails and names them
    assert coverage.status == "fail" and coverage.value == 7
    assert coverage.details["missing"] == ["EV-1", "EV-6", "EV-7", "EV-8"]
    assert coverage.reason.startswith("no item for EV-1, EV-6, EV-7, EV-8")
    assert by_id["EV-11.suite.duration"].details["series"]["x"][0] == "EV-2.a"


def test_only_selects_clauses_exactly(tmp_path: Path) -> None:
    tasks = {t.id: t for t in (make_task("EV-1.a", Calls().passing("EV-1.a")),
                               make_task("EV-10.a", Calls().passing("EV-10.a")),
                               make_task("EV-11.x", Calls().passing("EV-11.x")))}
    assert [t.id for t in select_tasks("quick", "cpu", ["EV-1"], tasks)] == ["EV-1.a"]
    assert [t.id for t in select_tasks("quick", "cpu", ["ev-10.a"], tasks)] == ["EV-10.a"]
    with pytest.raises(UserError, match="matches no task"):
        select_tasks("quick", "cpu", ["EV-1.b"], tasks)
    with pytest.raises(UserError, match="unknown suite"):
        select_tasks("fast", "cpu", [], tasks)
    report = run(tmp_path, tasks, only=("EV-1",))
    coverage = next(i for i in report.items if i.id == "EV-11.coverage")
    assert coverage.status == "skip" and "--only EV-1" in coverage.reason
    assert report.summary["counts"]["fail"] == 0


def test_interrupt_saves_finished_tasks_and_resume_runs_only_the_rest(tmp_path: Path) -> None:
    calls = Calls()
    state = {"interrupt": True}

    def third(ctx: EvalContext) -> list[Any]:
        calls.count["EV-4.c"] = calls.count.get("EV-4.c", 0) + 1
        if state["interrupt"]:
            raise KeyboardInterrupt
        return [Item.measured("EV-4.c.x", "EV-4", "c", value=3.0, unit="GB/s", method="fake")]

    tasks = {t.id: t for t in (make_task("EV-2.a", calls.passing("EV-2.a")),
                               make_task("EV-3.b", calls.passing("EV-3.b")),
                               make_task("EV-4.c", third))}
    with pytest.raises(SuiteInterrupted) as info:
        run(tmp_path, tasks, command=("zhisuan", "evaluate", "-o", str(tmp_path / "out")))
    assert info.value.finished == ["EV-2.a", "EV-3.b"] and info.value.remaining == ["EV-4.c"]
    assert info.value.resume_command.endswith("--resume")
    partial = tmp_path / "out" / ".partial"
    assert sorted(p.name for p in partial.glob("EV-*.json")) == ["EV-2.a.json", "EV-3.b.json"]
    assert not (tmp_path / "out" / "report.json").exists()

    state["interrupt"] = False
    events: list[SuiteEvent] = []
    report = run(tmp_path, tasks, events, resume=True)
    assert calls.count == {"EV-2.a": 1, "EV-3.b": 1, "EV-4.c": 2}  # only the missing task ran again
    assert {i.id for i in report.items} >= {"EV-2.a.x", "EV-3.b.x", "EV-4.c.x"}
    resumed = [e.task_id for e in events if e.kind == "task_end" and e.resumed]
    assert resumed == ["EV-2.a", "EV-3.b"] and report.summary["resumed_tasks"] == 2


def test_resume_reruns_a_crashed_task(tmp_path: Path) -> None:
    state = {"crash": True}
    count = {"n": 0}

    def flaky(ctx: EvalContext) -> list[Any]:
        count["n"] += 1
        if state["crash"]:
            raise RuntimeError("out of memory")
        return [Item.measured("EV-2.f.x", "EV-2", "f", value=1.0, unit="s", method="fake")]

    tasks = {"EV-2.f": make_task("EV-2.f", flaky)}
    first = run(tmp_path, tasks)
    assert first.items[0].status == "fail"
    state["crash"] = False
    second = run(tmp_path, tasks, resume=True)
    assert count["n"] == 2 and second.items[0].id == "EV-2.f.x" and second.items[0].status == "pass"


def test_resume_refuses_a_run_with_other_settings(tmp_path: Path) -> None:
    calls = Calls()
    tasks = {"EV-2.a": make_task("EV-2.a", calls.passing("EV-2.a"))}
    run(tmp_path, tasks, seed=0)
    with pytest.raises(UserError, match=r"holds a run of suite 'quick' on cpu:0 .*seed=0.*run without --resume"):
        run(tmp_path, tasks, seed=1, resume=True)
    with pytest.raises(UserError, match="holds a run"):
        run(tmp_path, tasks, threads=1, resume=True)
    # without --resume the old results are forgotten and everything runs again
    run(tmp_path, tasks, seed=1)
    assert calls.count["EV-2.a"] == 2


def test_a_fresh_run_clears_old_partial_results(tmp_path: Path) -> None:
    calls = Calls()
    tasks = {"EV-2.a": make_task("EV-2.a", calls.passing("EV-2.a"))}
    run(tmp_path, tasks)
    run(tmp_path, tasks)  # no --resume: runs again
    assert calls.count["EV-2.a"] == 2
    store = PartialStore(tmp_path / "out")
    assert store.read_run()["fingerprint"]["suite"] == "quick"


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    tasks = {"EV-2.a": make_task("EV-2.a", Calls().passing("EV-2.a"))}
    with pytest.raises(UserError, match="unknown suite"):
        run(tmp_path, tasks, suite="nightly")
    with pytest.raises(UserError, match="--threads"):
        run(tmp_path, tasks, threads=0)
    with pytest.raises(UserError, match="no cuda device: no driver here"):
        run(tmp_path, tasks, device="cuda:0")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        run_suite(SuiteConfig(out_dir=tmp_path / "file", telemetry=False), tasks=tasks, devices=devices())


def test_default_device_is_the_first_gpu_else_the_cpu() -> None:
    assert choose_device(None, devices(CPU)).id == "cpu:0"
    assert choose_device(None, devices(CPU, GPU)).id == "cuda:0"
    assert choose_device("cpu", devices(CPU, GPU)).id == "cpu:0"


def test_context_carries_threads_seed_workdir_environment(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def look(ctx: EvalContext) -> list[Any]:
        seen.update(threads=ctx.threads, seed=ctx.seed, work_dir=ctx.work_dir, env=ctx.environment,
                    suite=ctx.suite, device=ctx.device.id)
        (ctx.work_dir / "evidence.txt").write_text("log")
        return []

    run(tmp_path, {"EV-2.look": make_task("EV-2.look", look)}, seed=7)
    assert seen["threads"] == 2 and seen["seed"] == 7 and seen["suite"] == "quick" and seen["device"] == "cpu:0"
    assert (seen["work_dir"] / "evidence.txt").exists()  # evidence stays
    assert seen["env"]["seed"] == 7 and seen["env"]["device"]["id"] == "cpu:0"


def test_telemetry_runs_over_the_device_and_lands_in_the_report(tmp_path: Path) -> None:
    import time

    def busy(ctx: EvalContext) -> list[Any]:
        assert ctx.sampler is not None
        time.sleep(0.7)
        return [Item.measured("EV-2.b.x", "EV-2", "b", value=1.0, unit="GFLOP/s", method="fake")]

    report = run_suite(SuiteConfig(out_dir=tmp_path / "out", device="null"),
                       tasks={"EV-2.b": make_task("EV-2.b", busy)}, devices=devices(CPU, NULL))
    write_suite_html(report, tmp_path / "out")
    tel = report.telemetry
    assert tel["device"] == "null:0" and tel["interval_s"] == 0.2
    assert len(tel["series"]["t_s"]) >= 3 and set(tel["series"]["power_w"]) == {100.0}
    assert tel["summary"]["mean_power_w"] == pytest.approx(100.0)
    assert report.summary["tasks"][0]["start_offset_s"] >= 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Device telemetry over the run" in html


def test_an_unimportable_task_module_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(suite_mod, "import_errors", lambda: {"zhisuan.bench.broken": "SyntaxError: oops"})
    monkeypatch.setattr(suite_mod, "select_tasks", lambda *a, **k: [])
    report = run_suite(SuiteConfig(out_dir=tmp_path / "out", telemetry=False), devices=devices())
    item = next(i for i in report.items if i.id == "EV-11.tasks.broken")
    assert item.status == "fail" and "SyntaxError: oops" in item.reason


def test_numpy_values_in_items_are_saved_as_plain_json(tmp_path: Path) -> None:
    import numpy as np

    def np_task(ctx: EvalContext) -> list[Any]:
        return [Item.measured("EV-2.np", "EV-2", "np", value=np.float32(2.5), unit="GFLOP/s", method="fake",
                              details={"sizes": np.arange(3), "nan": float("nan")})]

    report = run(tmp_path, {"EV-2.np": make_task("EV-2.np", np_task)})
    item = report.items[0]
    assert item.value == 2.5 and type(item.value) is float
    assert item.details == {"sizes": [0, 1, 2], "nan": None}


@pytest.mark.gpu
def test_a_real_gpu_is_the_default_device_and_its_record_comes_from_nvml(tmp_path: Path) -> None:
    from zhisuan.device import list_devices

    found = list_devices()
    if not any(d.kind == "cuda" for d in found.devices):
        pytest.skip(f"no NVIDIA GPU: {found.reasons.get('cuda')}")
    report = run_suite(SuiteConfig(out_dir=tmp_path / "out", only=("EV-1",)), devices=found)
    by_id = {i.id: i for i in report.items}
    assert report.environment["device"]["kind"] == "cuda"
    assert by_id["EV-1.device.cores"].unit == "SMs" and by_id["EV-1.device.cores"].value > 0
    assert report.environment["drivers"]["nvidia"]
    assert report.telemetry["device"] == "cuda:0" and report.telemetry["points"] > 0


def test_a_failure_under_interference_is_disturbed_not_a_device_failure(tmp_path: Path) -> None:
    calls = Calls()
    events: list[SuiteEvent] = []

    def slow_loadgen(ctx: EvalContext) -> list[Any]:
        return [Item.failed("EV-5.m.server", "EV-5", "Server QPS", reason="LoadGen result INVALID", value=12.5,
                            unit="queries/s", method="fake LoadGen"),
                Item.failed("EV-5.m.accuracy", "EV-5", "Accuracy", reason="0.5 below the reference", value=0.2,
                            unit="fraction", method="fake", details={"timed": False})]

    def wrong_results(ctx: EvalContext) -> list[Any]:
        return [Item.failed("EV-8.zoo.m", "EV-8", "Results", reason="wrong results", method="fake")]

    tasks = {t.id: t for t in (make_task("EV-2.a", calls.passing("EV-2.a")), make_task("EV-5.m", slow_loadgen),
                               make_task("EV-8.m", wrong_results), make_task("EV-4.raise", fake_tasks(calls)["EV-4.raise"].run))}
    sampler = FakeSampler("disturbed", other=0.6)
    report = run(tmp_path, tasks, events, sampler=sampler, quiet_check_s=0.01)
    by_id = {i.id: i for i in report.items}
    server = by_id["EV-5.m.server"]
    assert server.status == "disturbed" and server.value == 12.5  # the figure is kept
    assert server.reason.startswith("LoadGen result INVALID — measured while the machine was disturbed")
    assert server.interference["verdict"] == "disturbed" and server.interference["other_cpu_share"] == 0.6
    # a check no other job can change stays a fail: wrong results, an accuracy drop, a crash
    assert by_id["EV-5.m.accuracy"].status == "fail" and by_id["EV-8.zoo.m"].status == "fail"
    assert by_id["EV-8.zoo.m"].interference is None  # not a timed item
    assert by_id["EV-4.raise"].status == "fail" and by_id["EV-4.raise"].interference["verdict"] == "disturbed"
    assert by_id["EV-2.a.x"].status == "pass" and by_id["EV-2.a.x"].interference["verdict"] == "disturbed"
    assert report.summary["counts"]["disturbed"] == 1
    assert report.summary["clauses"]["EV-5"] == {"pass": 0, "fail": 1, "skip": 0, "disturbed": 1}
    # the quiet check before the first task warned, and is in the report
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and "not quiet" in warnings[0].text and "60%" in warnings[0].text
    assert report.interference["verdict"] == "disturbed"
    assert sampler.started == sampler.stopped == 1 + len(tasks)
    tasks_summary = {t["id"]: t for t in report.summary["tasks"]}
    assert tasks_summary["EV-5.m"]["interference"]["verdict"] == "disturbed"
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert validate_report(data) == []
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<tr class="disturbed" id="EV-5.m.server">' in html and "1 disturbed</span>" in html
    assert 'class="interference disturbed">interference: disturbed — other processes 60% of 2 core(s)' in html
    assert "The machine was not quiet when the run started" in html
    assert "measured while the machine was disturbed" in html


def test_a_quiet_machine_keeps_failures_and_gives_no_warning(tmp_path: Path) -> None:
    events: list[SuiteEvent] = []
    report = run(tmp_path, fake_tasks(Calls()), events, quiet_check_s=0.01)
    assert {i.id: i for i in report.items}["EV-9.check"].status == "fail"
    assert report.summary["counts"]["disturbed"] == 0
    assert not [e for e in events if e.kind == "warning"] and report.interference["verdict"] == "quiet"


def test_resume_measures_a_disturbed_task_again(tmp_path: Path) -> None:
    calls = Calls()

    def flaky(ctx: EvalContext) -> list[Any]:
        calls.count["EV-5.m"] = calls.count.get("EV-5.m", 0) + 1
        return [Item.failed("EV-5.m.server", "EV-5", "Server QPS", reason="INVALID", method="fake")]

    tasks = {t.id: t for t in (make_task("EV-2.a", calls.passing("EV-2.a")), make_task("EV-5.m", flaky))}
    run(tmp_path, tasks, sampler=FakeSampler("disturbed", other=0.6))
    again = run(tmp_path, tasks, resume=True)
    assert calls.count == {"EV-2.a": 1, "EV-5.m": 2}
    assert {i.id: i.status for i in again.items}["EV-5.m.server"] == "fail"  # quiet now: a real failure
