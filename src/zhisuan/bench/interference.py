"""Interference during a timed measurement: how much of the machine other jobs took meanwhile.

A figure measured while other processes shared the cores (or the GPU) measures them as much as
the device. :class:`InterferenceSampler` runs a background thread (4 Hz by default) around a
timed item and returns a frozen :class:`Interference`:

``other_cpu_share``
    CPU time consumed by processes that are not ours, as a fraction of the cores this process
    may run on (``os.sched_getaffinity``) over the window: busy time of those cores in
    ``/proc/stat`` (user, nice, system, irq, softirq) minus the CPU time of our own process tree
    (this process and every descendant, live or reaped, from ``/proc/<pid>/stat``). 1.0 means another job kept every core busy the whole time.
    ``other_cpu_share_max`` is the highest share of one sampling interval.
``steal_share``
    ``steal`` time of ``/proc/stat`` (a hypervisor ran someone else on our virtual CPUs) over
    all time of those cores.
``load1_max``
    The highest 1-minute load average seen (``os.getloadavg``). It counts our own threads too, so
    it is recorded, not judged.
``foreign_gpu_processes``
    Processes on the watched GPUs (NVML ``nvmlDeviceGetComputeRunningProcesses``) that are not in
    our process tree. A PID that is not visible in this PID namespace (a container) cannot be told
    from ours; it is listed under ``gpu_processes_unresolved`` and not judged.

``verdict`` is ``disturbed`` when ``other_cpu_share >= 0.25`` (other jobs took a quarter of the
cores), ``steal_share >= 0.05`` or at least one foreign GPU process ran on a watched GPU;
``quiet`` otherwise; ``unknown`` when ``/proc/stat`` cannot be read (not Linux). The thresholds
are :data:`DEFAULT_THRESHOLDS`.

The suite (``zhisuan evaluate``) samples every task and every LoadGen scenario; a figure that
failed while the machine was disturbed becomes status ``disturbed`` (kept, not a device failure).
``zhisuan bench`` records the sample with its result. Both start with :func:`quiet_check`.

>>> from zhisuan.bench.interference import InterferenceSampler
>>> with InterferenceSampler() as sampler:
...     pass  # the timed work
>>> sampler.result.verdict in ("quiet", "disturbed", "unknown")
True
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zhisuan.results import Record

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_THRESHOLDS",
    "CpuTimes",
    "Interference",
    "InterferenceSampler",
    "Thresholds",
    "quiet_check",
    "warning_text",
]

DEFAULT_INTERVAL_S = 0.25
QUIET_CHECK_S = 0.5
Verdict = Literal["quiet", "disturbed", "unknown"]


@dataclass(frozen=True)
class Thresholds(Record):
    """From which figure a window is ``disturbed`` (each one alone is enough)."""

    other_cpu_share: float = 0.25  # other processes took a quarter of our cores
    steal_share: float = 0.05  # the hypervisor took 5 % of our virtual CPUs' time
    foreign_gpu_processes: int = 1  # one process that is not ours on a watched GPU


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Interference(Record):
    """What other jobs took of the machine during one timed window (see the module docstring)."""

    verdict: Verdict
    reasons: tuple[str, ...]
    duration_s: float
    samples: int
    cpus: int
    other_cpu_share: float | None
    other_cpu_share_max: float | None
    own_cpu_share: float | None
    steal_share: float | None
    load1_max: float | None
    other_cpu_s: float | None = None  # CPU seconds of other processes over the window
    own_cpu_s: float | None = None  # CPU seconds of our process tree over the window
    foreign_gpu_processes: tuple[dict[str, Any], ...] = ()
    gpu_processes_unresolved: int = 0
    gpus: tuple[int, ...] = ()
    sampler_cpu_s: float = 0.0  # CPU time of the sampling thread itself (its overhead)
    interval_s: float = DEFAULT_INTERVAL_S
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def disturbed(self) -> bool:
        return self.verdict == "disturbed"

    def summary(self) -> str:
        """One line: ``other processes 63 % of 2 cores, steal 0 %, load1 3.1``."""
        parts = []
        if self.other_cpu_share is not None:
            parts.append(f"other processes {self.other_cpu_share:.0%} of {self.cpus} core(s)")
        if self.steal_share is not None:
            parts.append(f"steal {self.steal_share:.0%}")
        if self.load1_max is not None:
            parts.append(f"load1 {self.load1_max:.1f}")
        if self.foreign_gpu_processes:
            parts.append(f"{len(self.foreign_gpu_processes)} other process(es) on the GPU "
                         + ", ".join(f"{p['pid']} {p.get('name') or '?'}" for p in self.foreign_gpu_processes[:3]))
        return ", ".join(parts) or "not measurable here"


# ---- reading the machine -----------------------------------------------------------------------


def _clk_tck() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def _affinity() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuTimes:
    """Seconds since boot of the watched cores: busy (not idle, not steal), steal, all."""

    busy_s: float
    steal_s: float
    total_s: float


def read_cpu_times(cpus: Sequence[int], proc: Path = Path("/proc")) -> CpuTimes:
    """Busy, steal and total seconds of ``cpus`` since boot, from ``/proc/stat``.

    Fields: user nice system idle iowait irq softirq steal (guest time is inside user).
    """
    tck = _clk_tck()
    wanted = {f"cpu{i}" for i in cpus}
    busy = steal = total = 0
    for line in (proc / "stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        f = [int(v) for v in rest.split()[:8]]
        f += [0] * (8 - len(f))
        busy += f[0] + f[1] + f[2] + f[5] + f[6]
        steal += f[7]
        total += sum(f)
    if not total:
        raise OSError(f"no line for cpus {list(cpus)} in {proc / 'stat'}")
    return CpuTimes(busy / tck, steal / tck, total / tck)


def _proc_stat_fields(pid: int, proc: Path) -> list[str]:
    text = (proc / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def own_tree(pid: int | None = None, proc: Path = Path("/proc")) -> tuple[float, set[int]]:
    """CPU seconds of process ``pid`` (default: this one) and all its descendants, and their PIDs.

    Each process counts its user + system time and that of its reaped children (utime, stime,
    cutime, cstime of ``/proc/<pid>/stat``), so a child that ran and exited during the window is
    counted once it is waited for. Descendants come from ``/proc/<pid>/task/<tid>/children``
    (about 0.1 ms); without that file (an old kernel) every ``/proc/<pid>/stat`` is read.
    """
    root = os.getpid() if pid is None else pid
    tck = _clk_tck()
    tree: set[int] = set()
    frontier = [root]
    seconds = 0.0
    while frontier:
        current = frontier.pop()
        if current in tree:
            continue
        try:
            f = _proc_stat_fields(current, proc)
        except (OSError, ValueError):  # exited meanwhile: its time is in its parent's once reaped
            continue
        tree.add(current)
        seconds += sum(int(v) for v in f[11:15]) / tck
        try:
            tasks = list((proc / str(current) / "task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                text = (t / "children").read_text()
            except FileNotFoundError:
                if current == root and t.name == str(root):
                    return _own_tree_scan(root, proc)  # no children files on this kernel
                continue
            except OSError:
                continue
            frontier.extend(int(c) for c in text.split())
    return seconds, tree


def _own_tree_scan(root: int, proc: Path) -> tuple[float, set[int]]:
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tck = _clk_tck()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = _proc_stat_fields(int(entry.name), proc)
        except (OSError, ValueError):
            continue
        parents[int(entry.name)] = int(f[1])
        times[int(entry.name)] = sum(int(v) for v in f[11:15]) / tck  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree), tree


class _Gpus:
    """NVML processes on the watched GPUs; ``nvml`` is a pynvml-like module (tests pass a fake)."""

    def __init__(self, indices: Sequence[int], nvml: Any = None) -> None:
        self.nvml: Any = None
        self.handles: dict[int, Any] = {}
        self.reason: str | None = None
        if not indices:
            return
        from zhisuan.device.nvidia import load_nvml

        self.nvml, self.reason = load_nvml(nvml)
        if self.nvml is None:
            return
        for i in indices:
            try:
                self.handles[i] = self.nvml.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:  # an NVML error: this GPU is not watched
                self.reason = f"nvmlDeviceGetHandleByIndex({i}): {exc}"

    def processes(self) -> list[tuple[int, int, int | None]]:
        """``(gpu, pid, used bytes)`` of every compute process on the watched GPUs."""
        out = []
        for index, handle in self.handles.items():
            try:
                running = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception as exc:  # NotSupported on some boards: keep the reason, watch on
                self.reason = f"nvmlDeviceGetComputeRunningProcesses: {exc}"
                continue
            for p in running or ():
                used = getattr(p, "usedGpuMemory", None)
                out.append((index, int(p.pid), used if isinstance(used, int) else None))
        return out

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):  # an NVML error at shutdown changes nothing
                self.nvml.nvmlShutdown()
            self.nvml = None


def _process_name(pid: int, proc: Path) -> str | None:
    try:
        return (proc / str(pid) / "comm").read_text().strip() or None
    except OSError:
        return None


# ---- the sampler --------------------------------------------------------------------------------


class InterferenceSampler:
    """Samples interference in a background thread between :meth:`start` and :meth:`stop`.

    ``gpus``: NVML indices whose processes are watched (default none: a CPU measurement).
    ``nvml``: a pynvml-like module (default: import ``pynvml``); ``proc``: the procfs root;
    ``own``: a function giving ``(cpu seconds, pids)`` of our process tree (default :func:`own_tree`);
    ``cpu_times``: one giving the cores' :class:`CpuTimes` (default :func:`read_cpu_times`); tests pass fakes.
    Use it as a context manager; the result is then in :attr:`result`.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        gpus: Iterable[int] = (),
        nvml: Any = None,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        proc: Path | str = Path("/proc"),
        own: Callable[[], tuple[float, set[int]]] | None = None,
        loadavg: Callable[[], tuple[float, float, float]] | None = None,
        cpu_times: Callable[[], CpuTimes] | None = None,
    ) -> None:
        self.interval_s = float(interval_s)
        self.gpu_indices = tuple(gpus)
        self.nvml = nvml
        self.thresholds = thresholds
        self.proc = Path(proc)
        self.cpus = _affinity()
        self._own = own or (lambda: own_tree(proc=self.proc))
        self._loadavg = loadavg or os.getloadavg
        self._cpu_times = cpu_times or (lambda: read_cpu_times(self.cpus, self.proc))
        self.result: Interference | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unavailable: dict[str, str] = {}
        self._reset()

    def _reset(self) -> None:
        self._first: tuple[float, CpuTimes, float] | None = None
        self._last: tuple[float, CpuTimes, float] | None = None
        self._share_max: float | None = None
        self._load_max: float | None = None
        self._samples = 0
        self._our_pids: set[int] = set()
        self._gpu_seen: dict[int, dict[str, Any]] = {}
        self._unresolved: set[int] = set()
        self._thread_cpu_s = 0.0
        self._gpus: _Gpus | None = None

    # ---- one reading

    def _read(self) -> None:
        t = time.monotonic()
        try:
            cpu = self._cpu_times()
        except (OSError, ValueError) as exc:
            self._unavailable["cpu"] = f"{self.proc / 'stat'}: {exc}"
            cpu = None
        try:
            own_s, pids = self._own()
        except Exception as exc:  # the tree is read while processes come and go
            self._unavailable["own_cpu"] = f"our process tree: {exc}"
            own_s, pids = None, set()
        try:
            load1 = float(self._loadavg()[0])
        except (OSError, AttributeError):
            load1 = None
        gpu_procs = self._gpus.processes() if self._gpus is not None else []
        with self._lock:
            self._samples += 1
            self._our_pids |= pids
            if load1 is not None:
                self._load_max = load1 if self._load_max is None else max(self._load_max, load1)
            for index, pid, used in gpu_procs:
                if pid in self._our_pids:
                    continue
                if not (self.proc / str(pid)).exists():
                    self._unresolved.add(pid)
                    continue
                seen = self._gpu_seen.setdefault(pid, {"pid": pid, "gpu": index, "name": _process_name(pid, self.proc),
                                                       "used_memory_mib": None})
                if used is not None:
                    mib = round(used / 2**20, 1)
                    seen["used_memory_mib"] = max(seen["used_memory_mib"] or 0.0, mib)
            if cpu is None or own_s is None:
                return
            now = (t, cpu, own_s)
            if self._last is not None:
                share = _other_share(self._last, now, len(self.cpus))
                if share is not None:
                    self._share_max = share if self._share_max is None else max(self._share_max, share)
            if self._first is None:
                self._first = now
            self._last = now

    def _loop(self) -> None:
        t0 = time.thread_time()
        while not self._stop.wait(self.interval_s):
            self._read()
        self._thread_cpu_s = time.thread_time() - t0

    # ---- start / stop

    def start(self) -> InterferenceSampler:
        self._reset()
        self._stop.clear()
        self.result = None
        self._gpus = _Gpus(self.gpu_indices, self.nvml)
        if self._gpus.reason:
            self._unavailable["gpu"] = self._gpus.reason
        self._t0 = time.monotonic()
        self._read()
        self._thread = threading.Thread(target=self._loop, name="zhisuan-interference", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Interference:
        if self._thread is None:
            raise RuntimeError("InterferenceSampler.stop() before start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._read()
        if self._gpus is not None:
            if self._gpus.reason:
                self._unavailable["gpu"] = self._gpus.reason
            self._gpus.close()
        self.result = self._result(time.monotonic() - self._t0)
        return self.result

    def __enter__(self) -> InterferenceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _result(self, duration_s: float) -> Interference:
        n = len(self.cpus)
        other = own = steal = other_s = own_s = None
        if self._first is not None and self._last is not None and self._last[0] > self._first[0]:
            (t0, c0, o0), (t1, c1, o1) = self._first, self._last
            wall = (t1 - t0) * n
            other = _other_share(self._first, self._last, n)
            own_s = max(0.0, o1 - o0)
            other_s = max(0.0, c1.busy_s - c0.busy_s - own_s)
            own = own_s / wall
            total = c1.total_s - c0.total_s
            steal = max(0.0, c1.steal_s - c0.steal_s) / total if total > 0 else 0.0
        foreign = tuple(sorted(self._gpu_seen.values(), key=lambda p: p["pid"]))
        th = self.thresholds
        reasons = []
        if other is not None and other >= th.other_cpu_share:
            reasons.append(f"other processes took {other:.0%} of {n} core(s) (threshold {th.other_cpu_share:.0%})")
        if steal is not None and steal >= th.steal_share:
            reasons.append(f"steal time {steal:.0%} (threshold {th.steal_share:.0%})")
        if len(foreign) >= th.foreign_gpu_processes:
            reasons.append(f"{len(foreign)} other process(es) on GPU "
                           + ", ".join(f"{p['gpu']} (pid {p['pid']} {p['name'] or '?'})" for p in foreign[:3]))
        verdict: Verdict = "disturbed" if reasons else ("unknown" if other is None else "quiet")
        unavailable = dict(self._unavailable)
        if self._unresolved:
            unavailable["gpu_processes_unresolved"] = (
                f"{len(self._unresolved)} GPU process(es) with a PID outside this PID namespace (a container?): "
                "not told from ours, not judged")
        return Interference(
            verdict=verdict, reasons=tuple(reasons), duration_s=round(duration_s, 3), samples=self._samples, cpus=n,
            other_cpu_share=_round(other), other_cpu_share_max=_round(self._share_max), own_cpu_share=_round(own),
            steal_share=_round(steal), load1_max=self._load_max, other_cpu_s=_round(other_s), own_cpu_s=_round(own_s),
            foreign_gpu_processes=foreign,
            gpu_processes_unresolved=len(self._unresolved), gpus=self.gpu_indices,
            sampler_cpu_s=round(self._thread_cpu_s, 4), interval_s=self.interval_s, thresholds=self.thresholds,
            unavailable=unavailable,
        )


def _other_share(a: tuple[float, CpuTimes, float], b: tuple[float, CpuTimes, float], cpus: int) -> float | None:
    """Other processes' CPU time between readings ``a`` and ``b`` over the cores' wall time."""
    wall = (b[0] - a[0]) * cpus
    if wall <= 0:
        return None
    busy = b[1].busy_s - a[1].busy_s
    ours = b[2] - a[2]
    return min(1.0, max(0.0, (busy - ours) / wall))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def quiet_check(
    duration_s: float = QUIET_CHECK_S, *, gpus: Iterable[int] = (), nvml: Any = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Interference:
    """Sample the machine for ``duration_s`` while we do nothing (the start of evaluate and bench)."""
    sampler = InterferenceSampler(min(DEFAULT_INTERVAL_S, duration_s / 2), gpus=gpus, nvml=nvml,
                                  thresholds=thresholds).start()
    time.sleep(duration_s)
    return sampler.stop()


def warning_text(check: Interference) -> str | None:
    """The warning to print when the machine is not quiet at the start (None when it is)."""
    if check.verdict != "disturbed":
        return None
    return ("warning: the machine is not quiet (" + "; ".join(check.reasons) + "); figures measured while other "
            "jobs run measure them too: a failed item measured under interference is reported as 'disturbed'")


def gpus_of(device: Any) -> tuple[int, ...]:
    """The NVML indices to watch for ``device`` (a DeviceInfo or a ``cuda:N`` string)."""
    if isinstance(device, str):
        kind, _, index = device.partition(":")
        return (int(index) if index.isdigit() else 0,) if kind == "cuda" else ()
    return (int(device.index),) if getattr(device, "kind", None) == "cuda" else ()
