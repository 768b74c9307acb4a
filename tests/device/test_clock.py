"""The measured CPU clock: a real measurement where a C compiler exists, and its reason where not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zhisuan.device.clock import measure_cpu_clock_mhz


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_measured_clock_is_plausible() -> None:
    clock = measure_cpu_clock_mhz(1)
    assert clock.reason is None and clock.mhz is not None
    assert 200.0 < clock.mhz < 7000.0


def test_measured_clock_without_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHISUAN_CACHE_DIR", str(tmp_path))
    clock = measure_cpu_clock_mhz(1, compiler=str(tmp_path / "no-such-cc"))
    assert clock.mhz is None and "compiler" in (clock.reason or "")
