"""Exception types. User errors (bad input, missing backend, no device) and internal bugs differ.

The CLI prints a :class:`UserError` as one line and exits 1, a :class:`UsageError` (the command
line itself is wrong) as one line and exits 2; anything else is a bug and is reported as an
internal error (one line, exit 3; ``ZHISUAN_DEBUG=1`` shows the traceback). The whole table of exit
statuses is ``zhisuan.cli.app.EXIT_STATUSES``.
"""

from __future__ import annotations


class ZhisuanError(Exception):
    """Base of every error zhisuan raises on purpose."""


class UserError(ZhisuanError):
    """The user can fix this: bad input, a missing file, an unknown name, a missing backend."""


class UsageError(UserError):
    """A value is out of its range or not one of its choices: wrong before anything is looked at
    (no file, device or server involved). The CLI exits 2, as for its own parse errors."""


class BackendUnavailableError(UserError):
    """A runtime backend or optional dependency is not installed or cannot reach the device."""

    def __init__(self, backend: str, reason: str, install_hint: str | None = None) -> None:
        self.backend = backend
        self.reason = reason
        self.install_hint = install_hint
        hint = f" (install with: {install_hint})" if install_hint else ""
        super().__init__(f"{backend} is unavailable: {reason}{hint}")


class ChecksumError(UserError):
    """A file on disk does not match the sha256 recorded for it."""


class InternalError(ZhisuanError):
    """A bug in zhisuan: an invariant did not hold."""
