"""The server configuration: every value is checked, with a one-line reason, when it is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhisuan.errors import UserError
from zhisuan.serve.config import MAX_BATCH_SIZE, ServerConfig


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_batch_size", 10**20, "--max-batch must be 1.."),
        ("max_batch_size", 0, "--max-batch must be 1.."),
        ("max_queue_delay_ms", float("inf"), "--max-delay-ms must be 0..60000"),
        ("max_queue_size", 10**20, "the queue size must be 1.."),
        ("concurrency", 10**9, "--concurrency must be 1.."),
        ("request_timeout_s", float("inf"), "the request timeout must be"),
        ("request_timeout_s", float("nan"), "the request timeout must be"),
    ],
)
def test_batching_values_are_bounded(tmp_path: Path, option: str, value: float, message: str) -> None:
    with pytest.raises(UserError, match=message.replace(".", r"\.")) as exc:
        ServerConfig(repo=tmp_path, **{option: value})
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 200


def test_the_largest_values_are_accepted(tmp_path: Path) -> None:
    config = ServerConfig(repo=tmp_path, max_batch_size=MAX_BATCH_SIZE, max_queue_delay_ms=60_000)
    assert config.max_batch_size == MAX_BATCH_SIZE
