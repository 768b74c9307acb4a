"""Structured request logs: one JSON line per request, daily files, safe appends, and the query."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from zhisuan.errors import UserError
from zhisuan.serve.logs import RequestLog, StatusFilter, parse_since, query_logs

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def _record(i: int, **extra: object) -> dict[str, object]:
    return {"request_id": f"r{i}", "model": "m", "version": "1", "status": 200, "latency_ms": 1.0,
            "queue_ms": 0.5, "batch_size": 1, "error": None, **extra}


def test_lines_go_to_a_file_per_utc_day(tmp_path: Path) -> None:
    log = RequestLog(tmp_path)
    log.write(_record(1), now=NOW - timedelta(days=1))
    log.write(_record(2), now=NOW)
    log.write(_record(3, status=503, error="not ready"), now=NOW + timedelta(seconds=1))
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests-20261122.jsonl", "requests-20261123.jsonl"]
    lines = (tmp_path / "requests-20261123.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r2", "r3"]
    assert json.loads(lines[0])["ts"] == "2026-11-23T12:00:00.000Z"


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    logs = [RequestLog(tmp_path), RequestLog(tmp_path)]  # two writers on one file, like two processes

    def write(k: int) -> None:
        for i in range(300):
            logs[k % 2].write(_record(i, request_id=f"t{k}-{i}", error="x" * 500), now=NOW)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "requests-20261123.jsonl").read_text().splitlines()
    assert len(lines) == 1200 and len({json.loads(line)["request_id"] for line in lines}) == 1200


def test_query_filters_and_limits(tmp_path: Path) -> None:
    log = RequestLog(tmp_path)
    for i in range(10):
        log.write(_record(i, model="a" if i % 2 else "b", status=200 if i < 7 else 429),
                  now=NOW - timedelta(minutes=30 - i))
    with open(tmp_path / "requests-20261123.jsonl", "ab") as fh:
        fh.write(b'{"request_id": "torn')  # the tail of a crashed write
    result = query_logs(tmp_path, model="a", now=NOW)
    assert [r["request_id"] for r in result.records] == ["r1", "r3", "r5", "r7", "r9"]
    assert result.lines_skipped == 1 and result.lines_read == 11
    assert [r["request_id"] for r in query_logs(tmp_path, status="4xx", now=NOW).records] == ["r7", "r8", "r9"]
    assert [r["request_id"] for r in query_logs(tmp_path, status="429", limit=2, now=NOW).records] == ["r8", "r9"]
    assert [r["request_id"] for r in query_logs(tmp_path, since="22m", now=NOW).records] == ["r8", "r9"]
    since = (NOW - timedelta(minutes=23)).isoformat()
    assert [r["request_id"] for r in query_logs(tmp_path, since=since).records] == ["r7", "r8", "r9"]


def test_parse_since_and_bad_queries(tmp_path: Path) -> None:
    assert parse_since("10m", now=NOW) == NOW - timedelta(minutes=10)
    assert parse_since("1.5h", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2d", now=NOW) == NOW - timedelta(days=2)
    assert parse_since("2026-11-23T10:00:00Z") == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert parse_since("2026-11-23 10:00") == datetime(2026, 11, 23, 10, tzinfo=UTC)
    with pytest.raises(UserError, match="bad --since"):
        parse_since("yesterday")
    with pytest.raises(UserError, match="not a directory"):
        query_logs(tmp_path / "none")
    with pytest.raises(UserError, match="bad --status"):
        query_logs(tmp_path, status="ok")
    with pytest.raises(UserError, match="--limit"):
        query_logs(tmp_path, limit=0)


def test_a_status_filter_is_parsed_once_and_matches_codes_or_classes() -> None:
    five = StatusFilter.parse(" 5XX ")
    assert five == StatusFilter("5xx") and five.matches(503) and five.matches("500") and not five.matches(429)
    assert StatusFilter.parse("429").matches(429) and not StatusFilter.parse("429").matches(428)
    with pytest.raises(UserError, match="bad --status"):
        StatusFilter.parse("6xx")
