"""Shared checks of the CLI's error contract: exit 1 and one ``error: ...`` line on stderr."""

from __future__ import annotations

import subprocess


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line of a CLI run that failed with exit 1 (AssertionError otherwise)."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert message in error_line(proc), proc.stderr
