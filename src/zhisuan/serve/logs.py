"""Structured request logs: one JSON line per request, one file per UTC day, and a query over them.

Each line holds ``ts`` (ISO 8601 UTC), ``request_id``, ``model``, ``version``, ``status``,
``latency_ms``, ``queue_ms``, ``batch_size`` and ``error``. Files are
``<dir>/requests-YYYYMMDD.jsonl``, opened with ``O_APPEND`` and written with a single
``os.write`` per line, so lines from several processes never interleave and a crash loses at
most the line being written.

>>> log = RequestLog(tmp_path)  # doctest: +SKIP
>>> log.write({"request_id": "r1", "model": "m", "version": "1", "status": 200, "latency_ms": 1.2})  # doctest: +SKIP
>>> query_logs(tmp_path, model="m", since="10m").records[0]["request_id"]  # doctest: +SKIP
'r1'
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.results import Record

__all__ = ["LOG_FIELDS", "LogQuery", "RequestLog", "StatusFilter", "parse_since", "query_logs"]

LOG_FIELDS = ("ts", "request_id", "model", "version", "status", "latency_ms", "queue_ms", "batch_size", "error")
_FILE = re.compile(r"^requests-(\d{8})\.jsonl$")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def _dumps(record: Mapping[str, Any]) -> bytes:
    try:
        import orjson

        return orjson.dumps(record) + b"\n"
    except ImportError:  # pragma: no cover - depends on the environment
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class RequestLog:
    """Appends request records to today's file (UTC); thread-safe, one ``write`` per line."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the log directory {self.directory}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        self._day = ""
        self._fd: int | None = None

    def path_for(self, when: datetime) -> Path:
        return self.directory / f"requests-{when:%Y%m%d}.jsonl"

    def write(self, record: Mapping[str, Any], *, now: datetime | None = None) -> None:
        """Append ``record`` (``ts`` is added when missing)."""
        now = now or datetime.now(UTC)
        line = _dumps({"ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **record})
        day = f"{now:%Y%m%d}"
        with self._lock:
            if day != self._day or self._fd is None:
                self._reopen(now, day)
            assert self._fd is not None
            os.write(self._fd, line)

    def _reopen(self, now: datetime, day: str) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path_for(now), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._day = day

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``"10m"``, ``"2h"``, ``"1d"``, ``"30s"`` ago, or an ISO 8601 time (naive means UTC)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"bad --since {text!r}: give an ISO time (2026-11-23T10:00:00Z) or an age like 30s, 10m, 2h, 1d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LogQuery(Record):
    """The records a query matched (oldest first), how many lines were read and skipped."""

    records: tuple[dict[str, Any], ...]
    files: tuple[str, ...]
    lines_read: int
    lines_skipped: int  # unparseable lines (e.g. the tail of a crashed write)


@dataclass(frozen=True)
class StatusFilter:
    """A status filter of :func:`query_logs`: one code (``429``) or a class (``5xx``).

    >>> StatusFilter.parse(" 5XX ").matches(503), StatusFilter.parse("429").matches(200)
    (True, False)
    """

    code: str  # "429", or "5xx" for a class

    @classmethod
    def parse(cls, text: str) -> StatusFilter:
        wanted = text.strip().lower()
        if not re.fullmatch(r"[1-5]\d\d|[1-5]xx", wanted):
            raise UserError(f"bad --status {text!r}: give a code like 200 or 429, or a class like 5xx")
        return cls(wanted)

    def matches(self, status: Any) -> bool:
        text = str(status)
        return text[:1] == self.code[0] if self.code.endswith("xx") else text == self.code


def query_logs(
    directory: str | os.PathLike[str],
    *,
    model: str | None = None,
    since: str | datetime | None = None,
    status: str | StatusFilter | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> LogQuery:
    """Request records under ``directory`` matching every filter given, oldest first.

    ``status`` is a code (``"429"``) or a class (``"5xx"``); ``limit`` keeps the newest N.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"no request logs: {root} is not a directory (the server writes them there)")
    wanted = StatusFilter.parse(status) if isinstance(status, str) else status
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, not {limit}")
    start = since if isinstance(since, datetime) else (parse_since(since, now=now) if since else None)
    files = sorted(p for p in root.iterdir() if _FILE.match(p.name))
    if start is not None:  # skip whole days before the start
        first_day = f"{start.astimezone(UTC):%Y%m%d}"
        files = [p for p in files if _FILE.match(p.name).group(1) >= first_day]  # type: ignore[union-attr]
    kept: deque[dict[str, Any]] = deque(maxlen=limit)
    read = skipped = 0
    for path in files:
        for record in _records(path):
            read += 1
            if record is None:
                skipped += 1
                continue
            if model is not None and record.get("model") != model:
                continue
            if wanted is not None and not wanted.matches(record.get("status")):
                continue
            if start is not None:
                try:
                    ts = datetime.fromisoformat(str(record.get("ts", "")).replace("Z", "+00:00"))
                except ValueError:
                    skipped += 1
                    continue
                if ts < start:
                    continue
            kept.append(record)
    return LogQuery(tuple(kept), tuple(p.name for p in files), read, skipped)


def _records(path: Path) -> Iterator[dict[str, Any] | None]:
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield None
                continue
            yield record if isinstance(record, dict) else None
