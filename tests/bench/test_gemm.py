"""EV-2 GEMM: timing arithmetic, real CPU GEMMs on tiny sizes, the task's items (and EV-7)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zhisuan.bench import gemm
from zhisuan.bench.gemm import (
    GemmResult,
    fit_size,
    gemm_item,
    measure_gemm,
    measure_gemm_cpu,
    measure_gemm_cuda,
    time_repeats,
)
from zhisuan.bench.tasks import EvalContext
from zhisuan.device.base import DeviceInfo, DeviceSample
from zhisuan.device.cpu import CpuProvider, host_u8s8_saturates
from zhisuan.device.peak import theoretical_peak
from zhisuan.device.telemetry import TelemetrySnapshot
from zhisuan.errors import UserError


def test_time_repeats_calibrates_and_converts_to_ops_per_second() -> None:
    calls = []

    def timer(step: Any, k: int) -> float:  # every step takes 0.01 s
        calls.append(k)
        return 0.01 * k

    samples, per_repeat = time_repeats(lambda: None, ops_per_step=1e9, repeats=3, min_repeat_s=0.05,
                                       warmup=1, timer=timer)
    assert per_repeat == 5 and calls == [1, 5, 5, 5]
    assert samples == pytest.approx([1e11] * 3)
    with pytest.raises(UserError):
        time_repeats(lambda: None, ops_per_step=1.0, repeats=0, min_repeat_s=0.1)


def test_fit_size_shrinks_only_what_would_be_too_slow() -> None:
    slow = lambda n: 1e-9 * n**3  # noqa: E731  (1 s per 1000^3)
    assert fit_size(slow, 2048) == 512  # 0.13 s at 512, 1.07 s at 1024
    fast = lambda n: 1e-12 * n**3  # noqa: E731
    assert fit_size(fast, 2048) == 2048


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_gemm_float(precision: str) -> None:
    result = measure_gemm_cpu(precision, size=128, repeats=3, threads=1, min_repeat_s=0.02)
    assert len(result.samples_tflops) == 3 and all(s > 0 for s in result.samples_tflops)
    assert result.unit == "TFLOP/s" and result.flops_per_gemm == 2 * 128**3
    if precision == "fp32":  # both libraries probed, the faster one measured
        probe = result.details["fp32_library_probe_gflops"]
        assert len(probe) == 2 and result.backend in probe
        assert result.backend == max(probe, key=probe.get)
    else:
        assert "torch.matmul" in result.backend
    assert 0 < result.tflops < 100  # a CPU core is not a data centre


def test_fp32_numpy_blas_pool_is_limited_while_measuring_and_restored(monkeypatch) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    seen = []
    import zhisuan.bench.gemm as G

    real = G._probe_gflops

    def probe(step, n, calls=3):
        seen.append([i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"])
        return real(step, n, calls)

    monkeypatch.setattr(G, "_probe_gflops", probe)
    measure_gemm_cpu("fp32", size=64, repeats=1, threads=1, min_repeat_s=0.01)
    assert seen and all(all(t == 1 for t in s) for s in seen)
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == before


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cpu_gemm_int8(backend: str) -> None:
    result = measure_gemm_cpu("int8", size=128, repeats=2, threads=1, min_repeat_s=0.02, int8_backend=backend)
    assert result.unit == "TOP/s" and result.tflops > 0
    assert ("MatMulInteger" if backend == "onnxruntime" else "_int_mm") in result.backend
    if backend == "onnxruntime":  # results checked exact; 7-bit weights only where u8 x s8 saturates
        assert result.details["checked"] == "64x64 block exact vs int64"
        if host_u8s8_saturates():
            assert result.details["weights"] == gemm.REDUCED_RANGE_NOTE and result.notes == (gemm.REDUCED_RANGE_NOTE,)
            assert "7-bit weights" in result.backend
        else:
            assert result.details["weights"] == "s8 weights in [-128, 127]" and not result.notes


@pytest.mark.parametrize("reduce_range", [True, False])
def test_int8_onnxruntime_weight_range_is_exact_or_refused(reduce_range: bool) -> None:
    """7-bit weights are exact on every CPU; full range is exact with VNNI and refused where it saturates."""
    pytest.importorskip("onnxruntime")
    run = lambda: measure_gemm_cpu("int8", size=128, repeats=1, threads=1, min_repeat_s=0.01,  # noqa: E731
                                   int8_backend="onnxruntime", int8_reduce_range=reduce_range)
    if not reduce_range and host_u8s8_saturates():
        with pytest.raises(UserError, match=r"wrong results \(s8 weights in \[-128, 127\]\)"):
            run()
    else:
        result = run()
        assert result.tflops > 0 and result.details["weights"].startswith(
            "s8 weights in [-64, 63]" if reduce_range else "s8 weights in [-128, 127]")


def test_cpu_gemm_rejects_unknown_precision() -> None:
    with pytest.raises(UserError, match="no CPU GEMM"):
        measure_gemm_cpu("fp8", size=64, repeats=1, threads=1)


def test_gemm_item_reference_is_the_peak() -> None:
    result = GemmResult("int8", "cpu", "x", 1024, (1.0, 2.0, 3.0), 4, 2)
    device = DeviceInfo("cuda", 0, "A100", None, None, (), ("fp32", "int8"), None,
                        details={"compute_capability": "8.0", "multiprocessor_count": 108, "max_sm_clock_mhz": 1410})
    item = gemm_item(result, theoretical_peak(device, "int8"))
    assert item.id == "EV-2.gemm.int8" and item.unit == "TOP/s" and item.value == 2.0
    assert item.reference == pytest.approx(623.8, abs=0.1)
    assert item.ratio_to_reference == pytest.approx(2.0 / item.reference)
    assert item.spread is not None and item.spread["min"] == 1.0 and item.repeats == 3
    assert "108 SMs" in (item.reference_source or "")


def _cpu_device() -> DeviceInfo:
    return CpuProvider().discover().devices[0]


class PowerSampler:
    """Hands energy_window a history with a 25 W CPU (RAPL counter) around the run."""

    interval_s = 0.1

    def __init__(self) -> None:
        import time

        self.t0 = time.time() - 1.0

    def history(self) -> list[TelemetrySnapshot]:
        import time

        now = time.time() + 1.0
        out, t = [], self.t0
        while t <= now:
            s = DeviceSample("cpu", 0, "cpu", t, None, None, None, 25.0, 25.0 * (t - self.t0), None)
            out.append(TelemetrySnapshot(t, t - self.t0, (s,)))
            t += self.interval_s
        return out

    @property
    def latest(self) -> TelemetrySnapshot:
        return self.history()[-1]

    def wait(self, seconds: float) -> bool:
        return True


def test_task_items_on_cpu_with_energy(tmp_path: Path) -> None:
    ctx = EvalContext(suite="quick", device=_cpu_device(), threads=1, work_dir=tmp_path, sampler=PowerSampler(),
                      options={"gemm_size": 128})
    items = {i.id: i for i in measure_gemm(ctx)}
    fp32 = items["EV-2.gemm.fp32"]
    assert fp32.status == "pass" and fp32.unit == "TFLOP/s" and fp32.repeats == 5
    assert fp32.reference is not None and fp32.ratio_to_reference is not None
    assert items["EV-2.gemm.tf32"].status == "skip" and "TF32" in (items["EV-2.gemm.tf32"].reason or "")
    assert items["EV-2.gemm.fp8"].status == "skip"
    assert items["EV-2.gemm.int8"].unit == "TOP/s" and items["EV-2.gemm.int8"].status == "pass"
    assert items["EV-2.gemm.fp16"].status == "pass"
    power = items["EV-7.gemm.fp32.power"]
    assert power.status == "pass" and power.value == pytest.approx(25.0, rel=0.01)
    ppw = items["EV-7.gemm.fp32.perf_per_watt"]
    assert ppw.value == pytest.approx(fp32.value * 1e3 / power.value, rel=0.05)  # GFLOP/s per W


def test_task_without_power_skips_energy_with_reason(tmp_path: Path) -> None:
    ctx = EvalContext(suite="quick", device=_cpu_device(), threads=1, work_dir=tmp_path,
                      options={"gemm_size": 64})
    items = {i.id: i for i in measure_gemm(ctx)}
    assert items["EV-2.gemm.fp32"].status == "pass"
    assert items["EV-7.gemm.fp32.energy"].status == "skip"
    assert "sampler" in (items["EV-7.gemm.fp32.energy"].reason or "")


def test_task_on_a_gpu_without_cuda_fails_with_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    a100 = DeviceInfo("cuda", 0, "A100", None, None, (), ("fp32", "tf32", "fp16", "bf16", "int8"), None,
                      details={"compute_capability": "8.0", "multiprocessor_count": 108, "max_sm_clock_mhz": 1410})
    ctx = EvalContext(suite="quick", device=a100, threads=1, work_dir=tmp_path)
    items = {i.id: i for i in measure_gemm(ctx)}
    assert items["EV-2.gemm.fp8"].status == "skip" and "8.0" in (items["EV-2.gemm.fp8"].reason or "")
    assert items["EV-2.gemm.fp16"].status == "fail" and "CUDA" in (items["EV-2.gemm.fp16"].reason or "")
    energy = items["EV-7.gemm.fp32.energy"]  # still present, skipped with the reason
    assert energy.status == "skip" and "FP32 GEMM failed" in (energy.reason or "")


def test_cuda_gemm_needs_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA"):
        measure_gemm_cuda("fp16", size=256, repeats=1)


def test_tf32_switch_is_restored() -> None:
    matmul = SimpleNamespace(allow_tf32=False)
    fake_torch = SimpleNamespace(backends=SimpleNamespace(cuda=SimpleNamespace(matmul=matmul)))
    with gemm._tf32(fake_torch, True):
        assert matmul.allow_tf32 is True
    assert matmul.allow_tf32 is False
    new = SimpleNamespace(fp32_precision="ieee")
    fake_torch = SimpleNamespace(backends=SimpleNamespace(cuda=SimpleNamespace(matmul=new)))
    with gemm._tf32(fake_torch, True):
        assert new.fp32_precision == "tf32"
    assert new.fp32_precision == "ieee"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16", "int8", "fp8"])
def test_cuda_gemm_real(precision: str) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if precision == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability 8.9")
    result = measure_gemm_cuda(precision, size=1024, repeats=2, min_repeat_s=0.02)
    assert result.tflops > 0 and result.device == "cuda:0"
