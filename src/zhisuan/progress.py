"""One progress protocol for every long job (export, calibration, benchmark, evaluation).

A job calls ``progress(text)`` for a message, and adds ``done=`` / ``total=`` when it knows how far
it is (``total`` None: unknown). Core code never draws anything: the CLI passes a callable that
feeds a rich bar, tests pass a list's ``append`` through :class:`Recorder`, and the default
:func:`no_progress` drops everything.

>>> seen = Recorder()
>>> seen("calibrating", done=1, total=4)
>>> seen.events
[('calibrating', 1, 4)]
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "Recorder", "no_progress"]


class Progress(Protocol):
    def __call__(self, text: str = "", *, done: float | None = None, total: float | None = None) -> None: ...


def no_progress(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
    """The default :class:`Progress`: reports nothing."""
    return None


class Recorder:
    """A :class:`Progress` that keeps every event, for tests and logs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float | None, float | None]] = []

    def __call__(self, text: str = "", *, done: float | None = None, total: float | None = None) -> None:
        self.events.append((text, done, total))
