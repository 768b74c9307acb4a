"""Small helpers for the child processes the evaluation tasks start."""

from __future__ import annotations

import signal


def exit_text(code: int | None) -> str:
    """How a child process ended, for a reason string: ``exit status 3`` or ``signal SIGKILL``.

    >>> exit_text(-9), exit_text(1)
    ('signal SIGKILL', 'exit status 1')
    """
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"
