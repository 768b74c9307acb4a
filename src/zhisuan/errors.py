"""Exception types. User errors (bad input, missing backend, no device) and internal bugs differ.

The CLI prints a :class:`UserError` as one line and exits 1; anything else is a bug and is
reported as an :class:`InternalError` (one line, exit 3; ``ZHISUAN_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations


class ZhisuanError(Exception):
    """Base of every error zhisuan raises on purpose."""


class UserError(ZhisuanError):
    """The user can fix this: bad input, a missing file, an unknown name, a missing backend."""


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
