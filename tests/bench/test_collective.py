"""EV-4 collectives: nccl-tests formulas, a real 2-process gloo sweep, failures and cleanup."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from zhisuan.bench.collective import (
    bus_bandwidth,
    bus_factor,
    collective_item,
    iterations_for,
    measure_collectives,
    run_collectives,
    summarize,
    sweep_sizes,
)
from zhisuan.bench.tasks import EvalContext
from zhisuan.device.base import DeviceInfo
from zhisuan.errors import UserError


def test_bus_factors_follow_nccl_tests() -> None:
    assert bus_factor("all_reduce", 8) == pytest.approx(2 * 7 / 8)
    assert bus_factor("all_gather", 8) == pytest.approx(7 / 8)
    assert bus_factor("broadcast", 8) == 1.0
    assert bus_bandwidth("all_reduce", algbw_gbps=100.0, ranks=4) == pytest.approx(150.0)
    with pytest.raises(UserError):
        bus_factor("gossip", 2)


def test_sizes_and_iterations() -> None:
    assert sweep_sizes(16 << 20, factor=16) == [1024, 16384, 262144, 4 << 20, 16 << 20]
    assert sweep_sizes(3000, smallest=1024, factor=4) == [1024, 3000]
    assert iterations_for(1024, target_bytes=1 << 20, low=5, high=50) == 50
    assert iterations_for(1 << 20, target_bytes=4 << 20, low=5, high=50) == 5


def test_summarize_takes_the_slowest_rank_then_the_median() -> None:
    point, samples = summarize("all_gather", 2, 1_000_000, [[1e-3, 2e-3, 3e-3], [2e-3, 1e-3, 1e-3]])
    # slowest per iteration: 2, 2, 3 ms -> median 2 ms
    assert point.time_s == pytest.approx(2e-3)
    assert point.algbw_gbps == pytest.approx(0.5)
    assert point.busbw_gbps == pytest.approx(0.25)
    assert samples == pytest.approx([0.25, 0.25, 1e6 / 3e-3 / 1e9 * 0.5])
    with pytest.raises(UserError):
        summarize("all_reduce", 2, 1024, [[1.0], [1.0, 2.0]])


def _no_children() -> bool:
    return not psutil.Process().children(recursive=True)


def test_gloo_sweep_with_two_processes(tmp_path: Path) -> None:
    results = run_collectives(backend="gloo", ranks=2, sizes=[1024, 64 << 10], warmup=1, min_iters=3,
                              max_iters=5, target_bytes=1 << 10, timeout_s=60, work_dir=tmp_path)
    assert set(results) == {"all_reduce", "all_gather"}
    for name, result in results.items():
        assert [p.size_bytes for p in result.points] == [1024, 64 << 10]
        for p in result.points:
            assert p.time_s > 0 and p.algbw_gbps == pytest.approx(p.size_bytes / p.time_s / 1e9)
            assert p.busbw_gbps == pytest.approx(p.algbw_gbps * bus_factor(name, 2))
            assert p.iterations == 3
    allreduce = collective_item(results["all_reduce"])
    # n = 2: all-reduce busbw = algbw x 2(n-1)/n = algbw; all-gather busbw = algbw / 2
    assert allreduce.value == pytest.approx(allreduce.details["algbw_gbps"])
    gather = collective_item(results["all_gather"])
    assert gather.value == pytest.approx(gather.details["algbw_gbps"] / 2)
    assert gather.details["series"][0]["x"] == [1024, 64 << 10] and gather.unit == "GB/s"
    assert [s["label"] for s in gather.details["series"]] == ["busbw", "algbw"]
    assert _no_children()


def test_a_failing_rank_becomes_an_error_with_its_reason(tmp_path: Path) -> None:
    # NCCL cannot run on a CPU-only torch: every rank dies, and the error says why
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() >= 2:
        pytest.skip("NCCL would work here")
    with pytest.raises(UserError, match="rank"):
        run_collectives(backend="nccl", ranks=2, sizes=[1024], timeout_s=60, work_dir=tmp_path)
    assert _no_children()


def test_a_hung_run_is_killed_at_the_timeout(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="did not finish"):
        run_collectives(backend="gloo", ranks=2, sizes=[1024], timeout_s=0.3, work_dir=tmp_path)
    assert _no_children()


def test_bad_arguments() -> None:
    with pytest.raises(UserError):
        run_collectives(backend="mpi", ranks=2, sizes=[1024])
    with pytest.raises(UserError):
        run_collectives(backend="gloo", ranks=1, sizes=[1024])


def test_task_on_a_gpu_machine_with_fewer_than_two_gpus(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has several GPUs")
    gpu = DeviceInfo("cuda", 0, "GPU", None, None, (), ("fp32",), None)
    items = measure_collectives(EvalContext(suite="quick", device=gpu, threads=1, work_dir=tmp_path))
    assert [i.id for i in items] == ["EV-4.all_reduce", "EV-4.all_gather"]
    assert all(i.status == "skip" and i.reason for i in items)
