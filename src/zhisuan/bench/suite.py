"""Run an evaluation suite (SPEC EV-11): pick the tasks, run them, save as you go, write the report.

:func:`run_suite` discovers every task registered with :func:`zhisuan.bench.tasks.task`, keeps
those of the chosen suite (``quick``, ``standard``, ``full``) that apply to the device under test
(and match ``only``), and runs them in order with one :class:`~zhisuan.bench.tasks.EvalContext`:
threads (default: physical cores), seed (default 0), a scratch directory per task and a running
:class:`~zhisuan.device.TelemetrySampler` over the device (0.2 s interval in the quick suite,
0.5 s otherwise). A task that raises becomes a ``fail`` item and the run goes on.

Each finished task's items are written at once (atomically) to ``DIR/.partial/<task>.json`` with
the run's fingerprint (suite, device, threads, seed), so ``resume=True`` reuses them and runs only
what is missing or crashed; a directory holding a run with another fingerprint is refused. Ctrl-C
raises :class:`SuiteInterrupted` after saving what finished. At the end ``DIR/report.json`` is
written atomically, with the EV-11 items about the report itself; ``DIR/report.html`` is written
by :func:`zhisuan.report.html.write_suite_html` (``zhisuan evaluate`` runs both).

>>> from zhisuan.bench.suite import SuiteConfig, run_suite
>>> report = run_suite(SuiteConfig(suite="quick", only=("EV-1",), out_dir="out"))  # doctest: +SKIP
>>> report.summary["counts"]  # doctest: +SKIP
{'pass': 12, 'fail': 0, 'skip': 3}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from zhisuan._io import atomic_write_json
from zhisuan.bench.interference import QUIET_CHECK_S, InterferenceSampler, gpus_of, warning_text
from zhisuan.bench.schema import (
    CLAUSES,
    SCHEMA_VERSION,
    Item,
    Report,
    plain_json,
    summarize,
    validate_report,
)
from zhisuan.bench.tasks import EvalContext, Suite, Task, import_errors, registered_tasks
from zhisuan.errors import InternalError, UserError, ZhisuanError
from zhisuan.progress import Progress
from zhisuan.results import Record

DEFAULT_OUT_DIR = Path("zhisuan-report")
DEFAULT_EST_S = 10.0  # a task that gives no estimate for the suite
PARTIAL_DIR = ".partial"
RUN_FILE = "run.json"
TELEMETRY_INTERVAL_S = {Suite.QUICK: 0.2, Suite.STANDARD: 0.5, Suite.FULL: 0.5}
TELEMETRY_POINTS = 600  # the report keeps at most this many telemetry points (bucket means)


@dataclass(frozen=True)
class SuiteConfig(Record):
    """What ``zhisuan evaluate`` was asked for.

    ``device``: a selector as in ``zhisuan device list`` (``cpu:0``, ``cuda:0``, ``1``, a name
    part); ``None`` picks the first GPU, else ``cpu:0``. ``threads=None``: physical cores.
    ``only``: clauses (``EV-2``), task ids or id prefixes (``EV-5.loadgen``). ``command`` is the
    command line recorded in the environment record (EV-1).
    """

    suite: Suite = Suite.QUICK  # a suite name is parsed
    device: str | None = None
    out_dir: Path | str = DEFAULT_OUT_DIR
    resume: bool = False
    threads: int | None = None
    seed: int = 0
    only: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    telemetry: bool = True
    quiet_check_s: float = QUIET_CHECK_S  # the machine sampled before the first task; 0: not checked

    def __post_init__(self) -> None:
        object.__setattr__(self, "suite", Suite.parse(self.suite))


EventKind = Literal["suite_start", "warning", "task_start", "task_progress", "task_end", "writing", "suite_end"]


@dataclass(frozen=True)
class SuiteEvent:
    """A progress event of :func:`run_suite`; the CLI turns these into progress bars.

    ``index``/``total`` count tasks; ``est_s`` is this task's estimate, ``total_est_s`` the
    suite's; a ``warning`` event's ``text`` says the machine is not quiet (the check before the first task); ``text``/``done``/``task_total`` come from the task's own ``ctx.progress`` (``None``:
    not given with that message).
    """

    kind: EventKind
    index: int = 0
    total: int = 0
    task_id: str = ""
    title: str = ""
    est_s: float = 0.0
    total_est_s: float = 0.0
    done: float | None = None
    task_total: float | None = None
    text: str = ""
    duration_s: float | None = None
    counts: dict[str, int] | None = None
    resumed: bool = False
    device: str = ""


class SuiteInterrupted(ZhisuanError):
    """The run was interrupted (Ctrl-C); what finished is saved and ``resume_command`` resumes it."""

    def __init__(self, out_dir: Path, finished: list[str], remaining: list[str], resume_command: str) -> None:
        self.out_dir = out_dir
        self.finished = finished
        self.remaining = remaining
        self.resume_command = resume_command
        super().__init__(
            f"interrupted: {len(finished)} task(s) finished and saved in {out_dir / PARTIAL_DIR}, "
            f"{len(remaining)} to go; resume with: {resume_command}"
        )


@dataclass
class _TaskRecord:
    task: Task
    items: list[Item]
    duration_s: float
    started_at: str
    resumed: bool = False
    crashed: bool = False
    start_offset_s: float | None = None  # since the telemetry started (None: resumed)
    interference: dict[str, Any] | None = None  # what other jobs took while the task ran


# ---- choosing what to run ----------------------------------------------------------------------


def _matches(task: Task, pattern: str) -> bool:
    p = pattern.strip().lower()
    tid, clause = task.id.lower(), task.clause.lower()
    return p == clause or tid == p or tid.startswith(p + ".") or (p.endswith(".") and tid.startswith(p))


def select_tasks(
    suite: Suite | str, device_kind: str, only: Sequence[str] = (), tasks: dict[str, Task] | None = None
) -> list[Task]:
    """The tasks of ``suite`` that apply to ``device_kind`` (and match one of ``only``), in order.

    An ``only`` pattern that matches no registered task at all is a :class:`UserError`.
    """
    suite = Suite.parse(suite)
    broken = {}
    if tasks is None:
        tasks, broken = registered_tasks(), import_errors()
    for pattern in only:
        if not any(_matches(t, pattern) for t in tasks.values()):
            clauses = sorted({t.clause for t in tasks.values()}, key=lambda c: int(c[3:]))
            hint = f" (task modules that failed to import: {'; '.join(f'{m}: {e}' for m, e in broken.items())})"
            raise UserError(
                f"--only {pattern!r} matches no task; give a clause ({', '.join(clauses)}) or a task id "
                "such as " + (next(iter(tasks)) if tasks else "EV-1.device") + (hint if broken else "")
            )
    return [
        t
        for t in tasks.values()
        if t.applies_to(suite, device_kind) and (not only or any(_matches(t, p) for p in only))
    ]


def choose_device(selector: str | None, devices: Any) -> Any:
    """The device to evaluate: ``selector`` if given, else the first GPU, else ``cpu:0``."""
    from zhisuan.device import find_device

    if selector:
        return find_device(selector, devices.devices, devices.reasons)
    gpus = [d for d in devices.devices if d.kind == "cuda"]
    if gpus:
        return gpus[0]
    cpus = [d for d in devices.devices if d.kind == "cpu"]
    if not cpus:
        raise UserError("no device to evaluate: the registry found neither a GPU nor a CPU")
    return cpus[0]


def default_threads(device: Any) -> int:
    """Physical cores of the host (the runtimes' intra-op threads for CPU work)."""
    import psutil

    cores = (device.details.get("physical_cores") if device.kind == "cpu" else None) or psutil.cpu_count(
        logical=False
    )
    return int(cores or psutil.cpu_count() or 1)


def fingerprint(suite: str, device: Any, threads: int, seed: int) -> dict[str, Any]:
    """What must match for saved task results to be reused by ``--resume``."""
    key = {"schema": SCHEMA_VERSION, "suite": suite, "device": device.id, "device_name": device.name,
           "threads": threads, "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return {**key, "digest": digest}


# ---- saved task results ------------------------------------------------------------------------


def _safe_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task_id) + ".json"


class PartialStore:
    """``DIR/.partial``: one JSON file per finished task plus ``run.json`` with the fingerprint."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / PARTIAL_DIR

    def read_run(self) -> dict[str, Any] | None:
        path = self.dir / RUN_FILE
        if not path.exists():
            return None
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is unreadable ({exc}); run without --resume to start over") from None
        if not isinstance(run, dict) or not isinstance(run.get("fingerprint"), dict):
            raise UserError(f"{path} is not a run record of zhisuan; run without --resume to start over")
        return run

    def start(self, run: dict[str, Any]) -> None:
        atomic_write_json(self.dir / RUN_FILE, run)

    def clear(self) -> None:
        """Forget a previous run's results (only the files this store writes)."""
        if self.dir.is_dir():
            for path in self.dir.glob("*.json"):
                path.unlink()

    def save(self, record: _TaskRecord, digest: str) -> Path:
        return atomic_write_json(self.dir / _safe_name(record.task.id), plain_json({
            "fingerprint": digest,
            "task_id": record.task.id,
            "clause": record.task.clause,
            "title": record.task.title,
            "started_at": record.started_at,
            "duration_s": record.duration_s,
            "crashed": record.crashed,
            "interference": record.interference,
            "items": [i.to_dict() for i in record.items],
        }))

    def load(self, task: Task, digest: str) -> _TaskRecord | None:
        """The saved result of ``task`` if it finished (not crashed) under this fingerprint."""
        path = self.dir / _safe_name(task.id)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("fingerprint") != digest:
                raise UserError(
                    f"{path} was saved by a run with other settings; run without --resume to start over"
                )
            if data.get("crashed"):
                return None  # a crash may be transient: run it again
            items = [Item.from_dict(i) for i in data["items"]]
            if any(i.status == "disturbed" for i in items):
                return None  # measured while other jobs ran: measure it again
            interference = data.get("interference") if isinstance(data.get("interference"), dict) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # not the JSON we wrote
            raise UserError(f"{path} is unreadable ({exc}); run without --resume to start over") from None
        return _TaskRecord(task, items, float(data.get("duration_s") or 0.0), str(data.get("started_at", "")),
                           resumed=True, interference=interference)


# ---- running -----------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def _crash_item(task: Task, exc: BaseException) -> Item:
    if isinstance(exc, UserError):
        reason = str(exc) or type(exc).__name__
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return Item.failed(
        task.id, task.clause, task.title or task.id, reason=f"the task crashed: {reason}",
        method=f"task {task.id}", details={"crashed": True, "exception": type(exc).__name__,
                                           "traceback": "".join(tb[-6:])},
    )


def _checked_items(task: Task, result: Any) -> list[Item]:
    """The task's items as plain JSON values; anything else than a list of Items is a bug in the task."""
    if not isinstance(result, list | tuple) or not all(isinstance(i, Item) for i in result):
        raise InternalError(f"task {task.id} returned {type(result).__name__}, not a list of Item")
    return [Item.from_dict(plain_json(i.to_dict())) for i in result]


def _counts(items: Sequence[Item]) -> dict[str, int]:
    return summarize(items)["counts"]


class _Telemetry:
    """A TelemetrySampler over the device, with a compact time series of that device kept aside."""

    def __init__(self, device: Any, interval_s: float, enabled: bool) -> None:
        self.device_id = device.id
        self.interval_s = interval_s
        self.sampler: Any = None
        self.reason: str | None = None
        self.points: list[tuple[float, float | None, float | None, float | None, float | None]] = []
        self.unavailable: dict[str, str] = {}
        self.summary: dict[str, Any] | None = None
        self.t0 = time.monotonic()
        if not enabled:
            self.reason = "telemetry was turned off for this run"
            return
        try:
            from zhisuan.device import TelemetrySampler

            self.sampler = TelemetrySampler(
                interval_s=interval_s, history=7200, kinds=[device.kind], on_sample=self._record
            ).start()
            self.t0 = time.monotonic()
        except Exception as exc:  # no sensor for this kind must not stop the evaluation
            self.sampler, self.reason = None, f"the telemetry sampler could not start: {exc}"

    def _record(self, snapshot: Any) -> None:
        for s in snapshot.samples:
            if s.id == self.device_id:
                clock = next(iter(s.clocks_mhz.values()), None) if s.clocks_mhz else None
                self.points.append((snapshot.elapsed_s, s.utilization_pct, s.power_w, s.temperature_c, clock))
                self.unavailable.update(s.unavailable)

    def stop(self) -> None:
        if self.sampler is None:
            return
        try:
            summary = self.sampler.stop()
            self.summary = {"duration_s": summary.duration_s, "snapshots": summary.snapshots,
                            **summary.device(self.device_id).to_dict()}
        except Exception as exc:  # the sampler thread failed: keep what it recorded
            self.reason = f"the telemetry sampler failed: {exc}"

    def to_dict(self) -> dict[str, Any]:
        if self.sampler is None:
            return {"device": self.device_id, "interval_s": None, "reason": self.reason}
        names = ("t_s", "utilization_pct", "power_w", "temperature_c", "clock_mhz")
        series = {n: [p[i] for p in _buckets(self.points, TELEMETRY_POINTS)] for i, n in enumerate(names)}
        read = {n for i, n in enumerate(names) if any(p[i] is not None for p in self.points)}
        unavailable = {k: v for k, v in self.unavailable.items() if k not in read}
        return {
            "device": self.device_id,
            "interval_s": self.interval_s,
            "points": len(self.points),
            "note": "bucket means when the run has more samples than the report keeps; power is the mean "
            "over each sampling interval (RAPL energy delta, NVML ~1 s average)",
            "series": series,
            "summary": self.summary,
            "unavailable": unavailable,
            "reason": self.reason,
        }


def _buckets(points: list[tuple[Any, ...]], limit: int) -> list[tuple[Any, ...]]:
    """At most ``limit`` points: means of equal consecutive buckets (None where a bucket has none)."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / limit)
    out = []
    for start in range(0, len(points), size):
        chunk = points[start : start + size]
        row = []
        for i in range(len(chunk[0])):
            values = [p[i] for p in chunk if p[i] is not None]
            row.append(sum(values) / len(values) if values else None)
        out.append(tuple(row))
    return out


def run_suite(
    config: SuiteConfig,
    progress: Callable[[SuiteEvent], None] | None = None,
    *,
    tasks: dict[str, Task] | None = None,
    devices: Any = None,
    interference: Callable[[], Any] | None = None,
) -> Report:
    """Run the suite, write ``report.json`` into ``config.out_dir``, return the report.

    ``report.html`` (and its EV-11 item) is the caller's: :func:`zhisuan.report.html.write_suite_html`.

    ``progress`` receives :class:`SuiteEvent` s. ``tasks`` (default: every registered task) and
    ``devices`` (a ``DeviceList``; default: the device registry with runtime backends) can be
    given, e.g. by tests, and so can ``interference``: a factory of samplers (``start()``, then
    ``stop()`` returning an :class:`~zhisuan.bench.interference.Interference`), one around each task
    (default: :class:`~zhisuan.bench.interference.InterferenceSampler` over the device's GPU).

    Each item of a task records the interference of its window (a LoadGen scenario records its
    own); a ``fail`` measured while the machine was disturbed becomes ``disturbed``. A task that
    crashed stays ``fail`` (with the record): an exception is not a figure.
    """
    from zhisuan.bench.environment_record import collect_environment

    emit = progress or (lambda _event: None)
    if config.threads is not None and config.threads < 1:
        raise UserError(f"--threads must be at least 1, not {config.threads}")
    if config.seed < 0:
        raise UserError(f"--seed must be 0 or more, not {config.seed}")
    out_dir = Path(config.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a directory")
    if devices is None:
        from zhisuan.device import list_devices
        from zhisuan.runtime import backend_status

        devices = list_devices(backend_statuses=backend_status(tolerate_errors=True))
    device = choose_device(config.device, devices)
    selected = select_tasks(config.suite, device.kind, config.only, tasks)
    broken = import_errors() if tasks is None else {}
    threads = config.threads or default_threads(device)
    fp = fingerprint(config.suite, device, threads, config.seed)
    store = PartialStore(out_dir)
    previous = store.read_run() if config.resume else None
    if previous is not None and previous.get("fingerprint", {}).get("digest") != fp["digest"]:
        was = previous.get("fingerprint", {})
        raise UserError(
            f"{out_dir} holds a run of suite {was.get('suite')!r} on {was.get('device')} "
            f"({was.get('device_name')}, threads={was.get('threads')}, seed={was.get('seed')}), not suite "
            f"{config.suite!r} on {device.id} (threads={threads}, seed={config.seed}); run without --resume "
            "to start over there, or choose another -o DIR"
        )
    if previous is None:
        store.clear()
        store.start({"fingerprint": fp, "started_at": _now(), "config": config.to_dict()})

    started_at, t_start = _now(), time.monotonic()
    command = list(config.command) or ["zhisuan", "evaluate", "--suite", config.suite, "--device", device.id,
                                       "-o", str(out_dir)]
    environment = plain_json(collect_environment(command, config.seed, threads, device, devices=devices))
    estimates = [float(t.est_s.get(config.suite, DEFAULT_EST_S)) for t in selected]
    emit(SuiteEvent("suite_start", total=len(selected), total_est_s=sum(estimates), device=f"{device.id} ({device.name})"))
    gpus = gpus_of(device)
    sampler_factory = interference or (lambda: InterferenceSampler(gpus=gpus))
    check = _quiet_check(sampler_factory, config.quiet_check_s) if config.quiet_check_s > 0 else None
    warning = warning_text(check) if check is not None else None
    if warning:
        emit(SuiteEvent("warning", total=len(selected), text=warning))
    telemetry = _Telemetry(device, TELEMETRY_INTERVAL_S[config.suite], config.telemetry)
    records: list[_TaskRecord] = []
    try:
        for index, (task, est) in enumerate(zip(selected, estimates, strict=True)):
            base = SuiteEvent("task_start", index=index, total=len(selected), task_id=task.id, title=task.title,
                              est_s=est, total_est_s=sum(estimates))
            saved = store.load(task, fp["digest"]) if config.resume else None
            if saved is not None:
                records.append(saved)
                emit(replace(base, kind="task_end", duration_s=saved.duration_s, counts=_counts(saved.items),
                             resumed=True))
                continue
            emit(base)
            offset = time.monotonic() - telemetry.t0
            record = _run_task(task, config, device, threads, environment, out_dir, telemetry.sampler,
                               _task_progress(emit, base), sampler_factory())
            record.start_offset_s = offset
            store.save(record, fp["digest"])
            records.append(record)
            emit(replace(base, kind="task_end", duration_s=record.duration_s, counts=_counts(record.items)))
    except KeyboardInterrupt:
        telemetry.stop()
        done = {r.task.id for r in records}
        resume = [*command, "--resume"] if "--resume" not in command else command
        raise SuiteInterrupted(
            out_dir, [r.task.id for r in records], [t.id for t in selected if t.id not in done], shlex.join(resume)
        ) from None
    telemetry.stop()
    emit(SuiteEvent("writing", total=len(selected), text=f"writing {out_dir / 'report.json'} and report.html"))
    report = _assemble(config, device, threads, environment, records, telemetry, started_at,
                       time.monotonic() - t_start, broken)
    report = replace(report, interference=None if check is None else plain_json(check.to_dict()))
    report = _write(report, out_dir)
    emit(SuiteEvent("suite_end", total=len(selected), counts=report.summary["counts"],
                    duration_s=time.monotonic() - t_start))
    return report


def _quiet_check(factory: Callable[[], Any], duration_s: float) -> Any:
    """The machine sampled for ``duration_s`` while the suite does nothing yet."""
    sampler = factory()
    sampler.start()
    time.sleep(duration_s)
    return sampler.stop()


def _task_progress(emit: Callable[[SuiteEvent], None], base: SuiteEvent) -> Progress:
    """The task's ``ctx.progress``: each call becomes a ``task_progress`` event."""

    def report(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
        emit(replace(base, kind="task_progress", text=str(text), done=None if done is None else float(done),
                     task_total=None if total is None else float(total)))

    return report


def _run_task(
    task: Task, config: SuiteConfig, device: Any, threads: int, environment: dict[str, Any], out_dir: Path,
    sampler: Any, progress: Progress, interference: Any,
) -> _TaskRecord:
    work_dir = out_dir / "work" / _safe_name(task.id)[: -len(".json")]
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(
        suite=config.suite, device=device, threads=threads, seed=config.seed, work_dir=work_dir,
        sampler=sampler, progress=progress, environment=environment,
    )
    started_at, t0 = _now(), time.perf_counter()
    crashed = False
    interference.start()
    try:
        items = _checked_items(task, task.run(ctx))
    except KeyboardInterrupt:
        interference.stop()
        raise
    except Exception as exc:  # every failure of a task is reported as a fail item; the suite goes on
        items, crashed = [_crash_item(task, exc)], True
    finally:
        _remove_if_empty(work_dir)
    duration_s = time.perf_counter() - t0
    record = plain_json(interference.stop().to_dict())
    if crashed:
        items = [replace(i, interference=record) for i in items]
    else:
        items = [i.under_interference(record) for i in items]
    return _TaskRecord(task, items, duration_s, started_at, crashed=crashed, interference=record)


def _remove_if_empty(work_dir: Path) -> None:
    for path in (work_dir, work_dir.parent):
        try:
            path.rmdir()  # only succeeds when empty: a task's evidence is kept
        except OSError:
            return


# ---- the report and its EV-11 items ------------------------------------------------------------


def _assemble(
    config: SuiteConfig, device: Any, threads: int, environment: dict[str, Any], records: list[_TaskRecord],
    telemetry: _Telemetry, started_at: str, duration_s: float, broken: dict[str, str],
) -> Report:
    items = [i for r in records for i in r.items]
    tasks_summary = [
        {"id": r.task.id, "clause": r.task.clause, "title": r.task.title, "duration_s": round(r.duration_s, 3),
         "est_s": r.task.est_s.get(config.suite), "counts": _counts(r.items), "resumed": r.resumed,
         "crashed": r.crashed, "interference": r.interference,
         "start_offset_s": round(r.start_offset_s, 3) if r.start_offset_s is not None else None}
        for r in records
    ]
    items.extend(_import_error_items(broken))
    items.append(_duration_item(records, duration_s))
    items.append(_coverage_item(items, config.only))
    summary = {
        **summarize(items),
        "tasks": tasks_summary,
        "duration_s": round(duration_s, 3),
        "device": {"id": device.id, "name": device.name, "kind": device.kind},
        "threads": threads,
        "seed": config.seed,
        "only": list(config.only),
        "resumed_tasks": sum(r.resumed for r in records),
    }
    return Report(
        schema_version=SCHEMA_VERSION, suite=config.suite, environment=environment, items=tuple(items),
        started_at=started_at, finished_at=None, summary=summary, telemetry=plain_json(telemetry.to_dict()),
    )


def _import_error_items(broken: dict[str, str]) -> list[Item]:
    """A failed item per task module that could not be imported (its tasks are missing)."""
    return [
        Item.failed(f"EV-11.tasks.{module.rsplit('.', 1)[-1]}", "EV-11", f"Task module {module} imports",
                    reason=f"{module} could not be imported, so its tasks did not run: {error}",
                    method="importlib.import_module of every module under zhisuan.bench")
        for module, error in sorted(broken.items())
    ]


def _duration_item(records: list[_TaskRecord], wall_s: float) -> Item:
    ran = [r for r in records if not r.resumed]
    return Item.measured(
        "EV-11.suite.duration", "EV-11", "Suite duration (tasks run now)", value=round(sum(r.duration_s for r in ran), 3),
        unit="s", repeats=1,
        method="wall clock of each task (time.perf_counter around the task), summed over the tasks run in "
        "this invocation; resumed tasks keep the duration measured when they ran",
        details={
            "wall_s": round(wall_s, 3),
            "resumed_s": round(sum(r.duration_s for r in records if r.resumed), 3),
            "series": {"x": [r.task.id for r in records], "y": [round(r.duration_s, 3) for r in records],
                       "kind": "bar", "x_label": "task", "y_label": "duration (s)", "label": "per task"},
        },
    )


def _coverage_item(items: list[Item], only: Sequence[str]) -> Item:
    present = sorted({i.clause for i in items} | {"EV-11"}, key=lambda c: int(c[3:]))
    missing = [c for c in CLAUSES if c not in present]
    method = "clauses EV-1..EV-11 with at least one item in this report (pass, fail or skip with its reason)"
    value = len(present)
    details = {"present": present, "missing": missing}
    if not missing:
        return Item.measured("EV-11.coverage", "EV-11", "Clause coverage", value=value, unit="clauses",
                             method=method, reference=len(CLAUSES), reference_source="clauses of the standard",
                             details={**details, "key": True})
    if only:
        return Item(id="EV-11.coverage", clause="EV-11", name="Clause coverage", value=value, unit="clauses",
                    method=method, repeats=1, spread=None, status="skip",
                    reason=f"--only {' '.join(only)} ran a subset; missing: {', '.join(missing)}",
                    reference=len(CLAUSES), ratio_to_reference=value / len(CLAUSES), details=details)
    return Item(id="EV-11.coverage", clause="EV-11", name="Clause coverage", value=value, unit="clauses",
                method=method, repeats=1, spread=None, status="fail",
                reason=f"no item for {', '.join(missing)} (no task of this suite covers them on this device)",
                reference=len(CLAUSES), ratio_to_reference=value / len(CLAUSES), details=details)


def _json_item(report: Report) -> Item:
    """EV-11.report.json: the document validates against the shipped JSON Schema and reads back."""
    import importlib.metadata

    data = report.to_dict()
    count = len(report.items) + 2  # with this item and the HTML item
    method = ("report.json validated against report.schema.json (JSON Schema 2020-12) with jsonschema "
              f"{_dist_version('jsonschema', importlib.metadata)}, read back with Report.from_dict; value: items")
    try:
        problems = validate_report(data)
        Report.from_dict(json.loads(json.dumps(data)))
    except UserError as exc:
        return Item(id="EV-11.report.json", clause="EV-11", name="report.json valid against the schema",
                    value=count, unit="items", method=method, repeats=1, spread=None, status="skip",
                    reason=str(exc))
    if problems:
        return Item.failed("EV-11.report.json", "EV-11", "report.json valid against the schema", value=count,
                           unit="items", method=method, reason="; ".join(problems[:5]),
                           details={"problems": problems[:50]})
    return Item.measured("EV-11.report.json", "EV-11", "report.json valid against the schema", value=count,
                         unit="items", method=method, repeats=1,
                         details={"schema_version": SCHEMA_VERSION, "bytes": len(json.dumps(data)), "key": True})


def _dist_version(name: str, metadata: Any) -> str:
    try:
        return str(metadata.version(name))
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _write(report: Report, out_dir: Path) -> Report:
    # report.html and its EV-11 item are added by zhisuan.report.html.write_suite_html, above bench.
    finished = replace(report, finished_at=_now())
    with_json = replace(finished, items=(*finished.items, _json_item(finished)))
    final = replace(with_json, summary={**with_json.summary, **summarize(with_json.items)})
    atomic_write_json(out_dir / "report.json", plain_json(final.to_dict()))
    return final


__all__ = [
    "DEFAULT_OUT_DIR",
    "PartialStore",
    "SuiteConfig",
    "SuiteEvent",
    "SuiteInterrupted",
    "choose_device",
    "default_threads",
    "fingerprint",
    "run_suite",
    "select_tasks",
]
