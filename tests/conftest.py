"""Shared fixtures: one zoo cache per test session, so each model is built once."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    if "ZHISUAN_TEST_CACHE_DIR" in os.environ:  # reuse a cache across local runs
        os.environ["ZHISUAN_CACHE_DIR"] = os.environ["ZHISUAN_TEST_CACHE_DIR"]
    else:
        os.environ["ZHISUAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("zhisuan-cache"))


@pytest.fixture(autouse=True)
def _restore_zhisuan_loggers() -> Iterator[None]:
    """Commands run in-process (``zhisuan serve`` configures its own handler and stops propagation)
    must not change logging for the tests after them."""
    import logging

    loggers = [logging.getLogger(name) for name in ("zhisuan", "zhisuan.serve")]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
