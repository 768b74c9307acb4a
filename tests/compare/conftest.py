"""Fixtures of the compare tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest


@pytest.fixture
def save(tmp_path: Path) -> Callable[[onnx.ModelProto, str], Path]:
    def _save(model: onnx.ModelProto, name: str) -> Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return _save
