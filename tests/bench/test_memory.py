"""EV-3 memory: STREAM byte counting and validation, array sizing, capacity, the task's items."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zhisuan.bench.memory import (
    MIN_ARRAY_BYTES,
    _results,
    _run_stream,
    capacity_cpu,
    measure_memory,
    stream_array_bytes,
    stream_cpu,
    stream_cuda,
    stream_items,
)
from zhisuan.bench.tasks import EvalContext
from zhisuan.device.cpu import CpuProvider
from zhisuan.errors import UserError


def test_stream_counts_bytes_as_stream_does() -> None:
    n = 1_000_000
    seconds = {"copy": [0.01, 0.02], "scale": [0.01], "add": [0.01], "triad": [0.02]}
    results = _results("cpu", n, seconds, True, {})
    # copy/scale move 2 arrays of 8-byte elements, add/triad 3
    assert results["copy"].bytes_per_element == 16 and results["triad"].bytes_per_element == 24
    assert results["copy"].samples_gbps == pytest.approx((16 * n / 0.01 / 1e9, 16 * n / 0.02 / 1e9))
    assert results["copy"].best_gbps == pytest.approx(1.6)
    assert results["add"].best_gbps == pytest.approx(2.4)
    assert results["triad"].best_gbps == pytest.approx(1.2)
    assert results["add"].bytes_per_pass == 3 * n * 8


def test_stream_cpu_runs_and_validates() -> None:
    results = stream_cpu(array_bytes=4 << 20, repeats=3, threads=1)
    for name, r in results.items():
        assert r.validated, name
        assert len(r.samples_gbps) == 3 and all(v > 0 for v in r.samples_gbps)
        assert r.best_gbps >= r.median_gbps


def test_stream_validation_catches_a_wrong_kernel() -> None:
    import torch

    class WrongScale:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

        @staticmethod
        def mul(x: Any, q: float, out: Any) -> Any:
            return torch.mul(x, q + 1.0, out=out)  # b = 4c instead of 3c

    n = 1024
    a = torch.full((n,), 1.0, dtype=torch.float64)
    b = torch.full((n,), 2.0, dtype=torch.float64)
    c = torch.zeros(n, dtype=torch.float64)
    _, ok = _run_stream(WrongScale(), a, b, c, 2, lambda fn: (fn(), 1e-3)[1])
    assert ok is False


def test_array_size_follows_the_last_level_cache() -> None:
    def cpu(l3: int, instances: int) -> Any:
        caches = [{"name": "L2", "level": 2, "type": "Unified", "size_bytes": 1 << 20, "instances": 8},
                  {"name": "L3", "level": 3, "type": "Unified", "size_bytes": l3, "instances": instances}]
        return SimpleNamespace(kind="cpu", details={"caches": caches})

    assert stream_array_bytes(cpu(32 << 20, 2)) == 4 * 64 << 20  # 4 x (32 MiB x 2)
    assert stream_array_bytes(cpu(4 << 20, 1)) == MIN_ARRAY_BYTES
    assert stream_array_bytes(SimpleNamespace(kind="cpu", details={})) == MIN_ARRAY_BYTES
    gpu = SimpleNamespace(kind="cuda", details={})
    assert stream_array_bytes(gpu, gpu_l2_bytes=50 << 20) == 512 << 20
    assert stream_array_bytes(gpu, gpu_l2_bytes=200 << 20) == 800 << 20


def test_capacity_cpu_verifies_a_bounded_block() -> None:
    result = capacity_cpu(touch_bytes=32 << 20)
    assert result.verified_bytes == 32 << 20
    assert 0 < result.usable_bytes <= (result.total_bytes or 0)
    assert result.touch_gbps and result.touch_gbps > 0


def test_failed_validation_becomes_a_fail_item() -> None:
    results = _results("cpu", 1000, {k: [0.01] for k in ("copy", "scale", "add", "triad")}, False, {})
    items = stream_items(results)
    assert all(i.status == "fail" and "STREAM expects" in (i.reason or "") for i in items)


def test_task_items_on_cpu(tmp_path: Path) -> None:
    device = CpuProvider().discover().devices[0]
    ctx = EvalContext(suite="quick", device=device, threads=1, work_dir=tmp_path,
                      options={"stream_array_bytes": 4 << 20, "capacity_touch_bytes": 16 << 20})
    items = {i.id: i for i in measure_memory(ctx)}
    for k in ("copy", "scale", "add", "triad"):
        item = items[f"EV-3.stream.{k}"]
        assert item.status == "pass" and item.unit == "GB/s" and item.value > 0 and item.repeats == 10
        assert item.value == item.spread["max"]  # STREAM reports the best pass
    assert "24 bytes" in items["EV-3.stream.triad"].method and "16 bytes" in items["EV-3.stream.copy"].method
    chart = items["EV-3.stream.triad"].details["series"]
    assert chart[0]["x"] == ["copy", "scale", "add", "triad"] and chart[0]["kind"] == "bar"
    cap = items["EV-3.capacity"]
    assert cap.status == "pass" and cap.unit == "GiB" and cap.value > 0
    for d in ("h2d", "d2h"):
        for m in ("pageable", "pinned"):
            skipped = items[f"EV-3.{d}.{m}"]
            assert skipped.status == "skip" and "no accelerator with separate memory" in (skipped.reason or "")


def test_cuda_stream_needs_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA"):
        stream_cuda(array_bytes=1 << 20, repeats=1)


@pytest.mark.gpu
def test_cuda_memory_real() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from zhisuan.bench.memory import capacity_cuda, host_device_bandwidth

    results = stream_cuda(array_bytes=64 << 20, repeats=2)
    assert all(r.validated and r.best_gbps > 0 for r in results.values())
    transfers = host_device_bandwidth(nbytes=16 << 20, repeats=2)
    assert {(t.direction, t.host_memory) for t in transfers} == {
        ("h2d", "pageable"), ("d2h", "pageable"), ("h2d", "pinned"), ("d2h", "pinned")}
    assert capacity_cuda(reserve_bytes=1 << 30).usable_bytes > 0
