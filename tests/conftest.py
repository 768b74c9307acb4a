"""Shared fixtures: one zoo cache per test session, so each model is built once."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    if "ZHISUAN_TEST_CACHE_DIR" in os.environ:  # reuse a cache across local runs
        os.environ["ZHISUAN_CACHE_DIR"] = os.environ["ZHISUAN_TEST_CACHE_DIR"]
    else:
        os.environ["ZHISUAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("zhisuan-cache"))
