"""Shared CLI helpers: JSON output, the rich console, a status spinner, option checks. Imports
nothing heavy."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress

console = Console()
err_console = Console(stderr=True)

JSON_HELP = "Print machine-readable JSON on stdout instead of a table."

# Ranges of the numeric options every command shares; click refuses a value outside them before
# the command runs (exit 2). The upper ends keep values inside what the C libraries take (int32).
THREADS = {"min": 1, "max": 1024}
SEED = {"min": 0, "max": 2**32 - 1}  # numpy's legacy RandomState and torch take 32-bit seeds
COUNT = {"min": 1, "max": 10**6}  # samples, batches, runs: a million is past any useful run
OPSET_MIN = 7  # the oldest opset ONNX Runtime and the exporters still take


def finite(value: float | None) -> float | None:
    """Option callback: NaN and infinity pass click's FloatRange (NaN compares false), refuse them."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def positive(value: float | None) -> float | None:
    """Option callback: a finite number above 0 (a duration, a timeout, a size)."""
    if finite(value) is not None and value <= 0:
        raise typer.BadParameter(f"{value} is not above 0")
    return value


def opset(value: int | None) -> int | None:
    """Option callback: an ONNX default-domain opset this onnx package knows (checked up front, so an
    exporter never runs with one it would reject after minutes of tracing)."""
    if value is None:
        return None
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    if not OPSET_MIN <= value <= newest:
        raise typer.BadParameter(f"{value} is not an ONNX opset in {OPSET_MIN}..{newest}")
    return value


def output_path(value: Path | None) -> Path | None:
    """Option callback: a file or directory the command will write can be created there, checked
    before any work (a path under a regular file, in /proc or a read-only directory is refused)."""
    if value is not None:
        check_writable(value, what=str(value))
    return value


def check_writable(path: Path, *, what: str) -> None:
    """Raise :class:`UserError` unless ``path`` can be created or replaced."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {what}: {ancestor} is not a directory")
    if path.is_dir() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {what}: {path} is not writable")
    try:  # a real write: os.access says yes to root even in /proc
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {what}: {ancestor}: {exc.strerror or exc}") from None


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no rich markup, so scripts can parse it)."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def status(message: str, *, enabled: bool = True) -> Iterator[Progress]:
    """A spinner on stderr for long work, fed as a :class:`~zhisuan.progress.Progress`:
    ``update(text)`` changes its message, ``done=``/``total=`` add a count. Silent when not a TTY."""
    if not enabled or not err_console.is_terminal:
        yield no_progress
        return
    with err_console.status(message) as live:

        def update(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
            count = "" if done is None else f" ({done:g}/{total:g})" if total is not None else f" ({done:g})"
            live.update(f"{text}{count}")

        yield update


def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
