"""The interference sampler: other processes' CPU time, steal, load and foreign GPU processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from busy_helpers import foreign_busy

from zhisuan.bench.interference import (
    CpuTimes,
    Interference,
    InterferenceSampler,
    Thresholds,
    gpus_of,
    own_tree,
    quiet_check,
    read_cpu_times,
    warning_text,
)

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")

def test_a_busy_loop_of_another_process_on_every_core_reads_as_disturbed(tmp_path: Path) -> None:
    with foreign_busy(6.0, tmp_path / "pids"), InterferenceSampler(0.1) as sampler:
        time.sleep(1.5)
    r = sampler.result
    assert r is not None
    assert r.verdict == "disturbed", r
    assert r.other_cpu_share is not None and r.other_cpu_share >= 0.5
    assert r.own_cpu_share is not None and r.own_cpu_share < 0.2
    assert r.samples >= 3 and r.cpus == len(os.sched_getaffinity(0))
    assert any("other processes took" in why for why in r.reasons)


def test_our_own_busy_children_are_not_counted_as_interference() -> None:
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: pass"
    n = len(os.sched_getaffinity(0))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with InterferenceSampler(0.1) as sampler:
        kids = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
        for k in kids:
            k.wait(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    r = sampler.result
    assert r is not None and r.own_cpu_s is not None and r.other_cpu_s is not None
    # the children's CPU time (each burns 0.8 s) is ours, however busy the machine is otherwise
    assert children_s >= 0.8 * n
    assert children_s <= r.own_cpu_s <= children_s + 0.3, r
    assert r.own_cpu_share is not None and r.own_cpu_share + (r.other_cpu_share or 0.0) <= 1.05


def test_own_tree_includes_live_children() -> None:
    kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        time.sleep(0.1)
        seconds, pids = own_tree()
        assert os.getpid() in pids and kid.pid in pids
        assert seconds > 0
    finally:
        kid.kill()
        kid.wait()


def test_cpu_times_of_the_cores_are_read_from_proc_stat() -> None:
    t = read_cpu_times(sorted(os.sched_getaffinity(0)))
    assert 0 < t.busy_s < t.total_s and 0 <= t.steal_s < t.total_s


class _FakeMachine:
    """CpuTimes growing at a fixed share of the sampler's cores per wall second (no timing asserted)."""

    def __init__(self, busy_share: float, steal_share: float = 0.0, own_share: float = 0.0) -> None:
        self.t0 = time.monotonic()
        self.busy, self.steal, self.own = busy_share, steal_share, own_share
        self.cpus = len(os.sched_getaffinity(0))

    def cpu_times(self) -> CpuTimes:
        wall = (time.monotonic() - self.t0) * self.cpus
        return CpuTimes(busy_s=wall * self.busy, steal_s=wall * self.steal, total_s=wall)

    def own_tree(self) -> tuple[float, set[int]]:
        return (time.monotonic() - self.t0) * self.cpus * self.own, {os.getpid()}


def _sample(machine: _FakeMachine, **kw: Any) -> Interference:
    with InterferenceSampler(0.05, cpu_times=machine.cpu_times, own=machine.own_tree, loadavg=lambda: (0.5, 0, 0),
                             **kw) as sampler:
        time.sleep(0.3)
    assert sampler.result is not None
    return sampler.result


def test_a_quiet_machine_reads_quiet_and_our_own_work_is_subtracted() -> None:
    r = _sample(_FakeMachine(busy_share=0.90, own_share=0.85))
    assert r.verdict == "quiet" and not r.reasons
    assert r.other_cpu_share == pytest.approx(0.05, abs=0.01)
    assert r.own_cpu_share == pytest.approx(0.85, abs=0.01)
    assert r.load1_max == 0.5


def test_thresholds_decide_the_verdict() -> None:
    assert _sample(_FakeMachine(busy_share=0.30)).verdict == "disturbed"
    assert _sample(_FakeMachine(busy_share=0.30), thresholds=Thresholds(other_cpu_share=0.5)).verdict == "quiet"
    stolen = _sample(_FakeMachine(busy_share=0.0, steal_share=0.2))
    assert stolen.verdict == "disturbed" and stolen.steal_share == pytest.approx(0.2, abs=0.01)
    assert "steal" in stolen.reasons[0]


def test_an_unreadable_proc_stat_is_unknown_not_quiet(tmp_path: Path) -> None:
    with InterferenceSampler(0.05, proc=tmp_path) as sampler:
        time.sleep(0.1)
    r = sampler.result
    assert r is not None and r.verdict == "unknown" and r.other_cpu_share is None
    assert "cpu" in r.unavailable


class FakeNvml:
    """A pynvml-like module: GPU 0 runs ``pids``."""

    class NVMLError(Exception):
        pass

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return f"gpu{i}"

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=512 << 20) for p in self.pids]


def test_a_foreign_gpu_process_disturbs_and_our_own_does_not() -> None:
    child = subprocess.Popen(["sleep", "5"])  # ours: in our process tree
    try:
        time.sleep(0.05)
        other = os.getppid()  # our parent: visible in /proc and not in our tree
        nvml = FakeNvml([os.getpid(), other, 999_999_999])
        r = _sample(_FakeMachine(busy_share=0.0), gpus=(0,), nvml=nvml)
    finally:
        child.kill()
        child.wait()
    assert r.verdict == "disturbed"
    assert [p["pid"] for p in r.foreign_gpu_processes] == [other]
    assert r.foreign_gpu_processes[0]["used_memory_mib"] == 512.0
    assert r.gpu_processes_unresolved == 1 and "gpu_processes_unresolved" in r.unavailable
    assert nvml.shutdowns == 1
    ours_only = _sample(_FakeMachine(busy_share=0.0), gpus=(0,), nvml=FakeNvml([os.getpid(), child.pid]))
    assert ours_only.verdict == "quiet" and not ours_only.foreign_gpu_processes


def test_without_nvml_the_gpu_is_skipped_with_a_reason() -> None:
    class Broken(FakeNvml):
        def nvmlInit(self) -> None:
            raise self.NVMLError("NVML Shared Library Not Found")

    r = _sample(_FakeMachine(busy_share=0.0), gpus=(0,), nvml=Broken([]))
    assert r.verdict == "quiet" and "NVML unavailable" in r.unavailable["gpu"]


def test_quiet_check_and_its_warning() -> None:
    r = quiet_check(0.2)
    assert r.verdict in ("quiet", "disturbed") and r.duration_s >= 0.2
    disturbed = _sample(_FakeMachine(busy_share=0.9))
    text = warning_text(disturbed)
    assert text is not None and text.startswith("warning: the machine is not quiet")
    assert warning_text(_sample(_FakeMachine(busy_share=0.0))) is None


def test_the_result_is_a_frozen_record_with_units_in_its_names() -> None:
    r = _sample(_FakeMachine(busy_share=0.0))
    d = r.to_dict()
    assert d["verdict"] == "quiet" and d["thresholds"] == {"other_cpu_share": 0.25, "steal_share": 0.05,
                                                           "foreign_gpu_processes": 1}
    assert r.sampler_cpu_s >= 0
    with pytest.raises(AttributeError):
        r.verdict = "disturbed"  # type: ignore[misc]


def test_gpus_of_a_device() -> None:
    assert gpus_of("cuda:1") == (1,) and gpus_of("cpu") == () and gpus_of("cuda") == (0,)
    assert gpus_of(SimpleNamespace(kind="cuda", index=2)) == (2,)
    assert gpus_of(SimpleNamespace(kind="cpu", index=0)) == ()
