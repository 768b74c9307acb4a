"""Fixtures for the optimize tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from optimize_helpers import run_ort


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def same_outputs() -> Callable[[onnx.ModelProto, onnx.ModelProto, dict[str, np.ndarray]], None]:
    def check(before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
        for a, b in zip(run_ort(before, feeds), run_ort(after, feeds), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)

    return check
