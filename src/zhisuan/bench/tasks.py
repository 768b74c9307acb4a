"""The evaluation suite as a list of tasks; each task measures and returns :class:`Item` s.

A task module registers its measurements with :func:`task`; ``zhisuan evaluate`` discovers the
modules under ``zhisuan.bench``, picks the tasks of the chosen suite and runs them one by one,
saving each task's items as soon as it finishes so that an interrupted run can ``--resume``.

>>> from zhisuan.bench.tasks import task, EvalContext
>>> @task("EV-2.example", clause="EV-2", suites=("quick", "standard", "full"), est_s={"quick": 5})
... def measure_example(ctx: EvalContext) -> list:
...     return []   # measure for real, return Items
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan.errors import InternalError, UsageError
from zhisuan.progress import Progress, no_progress


class Suite(enum.StrEnum):
    """How long an evaluation runs: ``quick`` (minutes), ``standard``, ``full``."""

    QUICK = "quick"
    STANDARD = "standard"
    FULL = "full"

    @classmethod
    def parse(cls, value: str) -> Suite:
        """``value`` as a suite; anything else is a :class:`UserError` naming the three."""
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"unknown suite {value!r}; choose one of: {', '.join(cls)}") from None


SUITES: tuple[Suite, ...] = tuple(Suite)


@dataclass
class EvalContext:
    """What a task may use: the suite, the device under test, threads, seed, a scratch dir.

    ``device`` is the :class:`zhisuan.device.base.DeviceInfo` being evaluated (``kind`` "cpu",
    "cuda", ...). ``progress(text, done=, total=)`` (:class:`zhisuan.progress.Progress`) updates
    the task's progress bar (a no-op when there is none). ``sampler`` is a running TelemetrySampler over the device when one could be
    started, else None; tasks that report energy read their window from it. ``work_dir`` is the
    task's own scratch directory (``DIR/work/<task id>``, kept as evidence, e.g. LoadGen logs).
    ``environment`` is the run's EV-1 environment record (:mod:`zhisuan.bench.environment_record`).
    """

    suite: Suite  # a suite name is parsed
    device: Any
    threads: int
    seed: int = 0
    work_dir: Path = Path(".")
    sampler: Any = None
    progress: Progress = no_progress
    options: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.suite = Suite.parse(self.suite)

    @property
    def is_quick(self) -> bool:
        return self.suite is Suite.QUICK

    def pick(self, quick: Any, standard: Any, full: Any) -> Any:
        """The parameter for this suite, e.g. ``ctx.pick(quick=60, standard=600, full=3600)``."""
        return {Suite.QUICK: quick, Suite.STANDARD: standard, Suite.FULL: full}[self.suite]


@dataclass(frozen=True)
class Task:
    id: str
    clause: str
    suites: tuple[Suite, ...]
    run: Callable[[EvalContext], list[Any]]
    title: str = ""
    est_s: dict[str, float] = field(default_factory=dict)
    device_kinds: tuple[str, ...] = ()  # empty: any device

    def applies_to(self, suite: Suite | str, device_kind: str) -> bool:
        return suite in self.suites and (not self.device_kinds or device_kind in self.device_kinds)


_TASKS: dict[str, Task] = {}
_IMPORT_ERRORS: dict[str, str] = {}
#: Functions that register tasks from data known only at run time (zoo entries, including ones
#: added with ``zoo.register``); :func:`registered_tasks` calls them every time.
_PROVIDERS: list[Callable[[], None]] = []


def task_provider(fn: Callable[[], None]) -> Callable[[], None]:
    """Register ``fn``, which registers tasks with :func:`task` when :func:`registered_tasks` runs
    (it must skip tasks it registered before)."""
    if fn not in _PROVIDERS:
        _PROVIDERS.append(fn)
    return fn


def task(
    id: str,
    *,
    clause: str,
    suites: Sequence[str] = SUITES,
    title: str = "",
    est_s: dict[str, float] | None = None,
    device_kinds: Sequence[str] = (),
) -> Callable[[Callable[[EvalContext], list[Any]]], Callable[[EvalContext], list[Any]]]:
    """Register a measurement function as a suite task."""

    def register(fn: Callable[[EvalContext], list[Any]]) -> Callable[[EvalContext], list[Any]]:
        if id in _TASKS and _TASKS[id].run is not fn:
            raise InternalError(f"task {id!r} registered twice")
        _TASKS[id] = Task(id=id, clause=clause, suites=tuple(Suite.parse(s) for s in suites), run=fn,
                          title=title or (fn.__doc__ or id).strip().splitlines()[0],
                          est_s=dict(est_s or {}), device_kinds=tuple(device_kinds))
        return fn

    return register


def forget(task_id: str) -> None:
    """Drop a task a provider registered (its source, e.g. a zoo entry, is gone)."""
    _TASKS.pop(task_id, None)


def registered_ids() -> set[str]:
    """Ids of the tasks registered so far (no module import, no provider call)."""
    return set(_TASKS)


def registered_tasks() -> dict[str, Task]:
    """Every task of every module under ``zhisuan.bench`` (imported on first call).

    A module that fails to import does not hide the others: its error is kept in
    :func:`import_errors` and the suite reports it as a failed item.
    """
    import importlib
    import pkgutil

    import zhisuan.bench as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            name = f"{pkg.__name__}.{mod.name}"
            try:
                importlib.import_module(name)
            except Exception as exc:  # one broken task module must not stop the evaluation
                _IMPORT_ERRORS[name] = f"{type(exc).__name__}: {exc}"
            else:
                _IMPORT_ERRORS.pop(name, None)
    for provide in _PROVIDERS:
        provide()
    return dict(sorted(_TASKS.items(), key=lambda kv: (int(kv[1].clause[3:]), kv[0])))


def import_errors() -> dict[str, str]:
    """Task modules that could not be imported by :func:`registered_tasks`, with the error."""
    return dict(_IMPORT_ERRORS)
