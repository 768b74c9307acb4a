"""Shared CLI helpers: JSON output, the rich console, a status spinner. Imports nothing heavy."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from zhisuan.progress import Progress, no_progress

console = Console()
err_console = Console(stderr=True)

JSON_HELP = "Print machine-readable JSON on stdout instead of a table."


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
