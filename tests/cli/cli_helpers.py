"""Shared checks of the CLI's error contract: one ``error: ...`` line on stderr, exit 1 for a user
error, 2 for a usage error (the README's exit table)."""

from __future__ import annotations

import subprocess


def error_line(proc: subprocess.CompletedProcess[str], *, code: int = 1) -> str:
    """The single ``error: ...`` line of a CLI run that failed with ``code`` (AssertionError otherwise)."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert message in error_line(proc), proc.stderr


def usage_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line of a run refused by its command line (exit 2)."""
    return error_line(proc, code=2)
