"""EV-2 peak compute: dense GEMM throughput per precision against the theoretical peak.

Each precision is timed on square ``n x n x n`` matrices (``2 n^3`` operations per GEMM, the
FMA counted as two) with the library a deployment would use:

=========  ===============================================  ======================================
precision  CPU                                              NVIDIA GPU
=========  ===============================================  ======================================
fp32       ``torch.matmul`` (MKL / oneDNN sgemm)            ``torch.matmul``, TF32 off (CUDA cores)
tf32       -- (no TF32 on CPUs)                             ``torch.matmul``, TF32 on (tensor cores)
fp16       ``torch.matmul`` float16 (slow when emulated)    ``torch.matmul`` float16
bf16       ``torch.matmul`` bfloat16 (oneDNN)               ``torch.matmul`` bfloat16
int8       ONNX Runtime ``MatMulInteger`` (u8 x s8 -> s32,  ``torch._int_mm`` (s8 x s8 -> s32)
           MLAS, VNNI where present; 7-bit weights
           without VNNI); ``torch._int_mm`` when ONNX
           Runtime is missing
fp8        -- (no FP8 GEMM on CPUs)                         ``torch._scaled_mm`` e4m3 (cc >= 8.9)
=========  ===============================================  ======================================

One *repeat* runs the GEMM back to back for at least ``min_repeat_s`` (the count is calibrated
once after warm-up) and yields one throughput sample; the item's value is the median over the
repeats and its spread the min/median/max/cv of them. A precision the hardware lacks natively
(FP16 on most CPUs) is still measured, at a size that fits the time budget, and says so.

Throughput is in TFLOP/s (TOP/s for INT8) on every device, so reports compare directly.

On an x86 CPU without VNNI, MLAS multiplies u8 by s8 with ``vpmaddubsw``, whose int16 pair sums
saturate (255 x 127 x 2 > 32767), so full-range weights give wrong sums. The INT8 GEMM there
uses 7-bit weights in [-64, 63] (what ONNX Runtime's quantizer does with ``reduce_range``, and
what a model quantized for that CPU computes with): the same instructions at the same rate,
exact sums, and the item says so (:func:`zhisuan.device.cpu.u8s8_saturates`).

>>> from zhisuan.bench.gemm import measure_gemm_cpu
>>> result = measure_gemm_cpu("fp32", size=256, repeats=3, threads=1, min_repeat_s=0.05)
>>> result.tflops > 0
True
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zhisuan.bench.energy import EnergyReading, energy_items, energy_window
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.device.peak import PeakEstimate, theoretical_peak
from zhisuan.errors import UserError
from zhisuan.results import Record
from zhisuan.runtime.base import Precision

# A GEMM's precision is a Precision; TF32 (matmuls of FP32 data) and FP8 e4m3 run on GPU tensor cores only.
CPU_PRECISIONS: tuple[Precision, ...] = (Precision.FP32, Precision.BF16, Precision.FP16, Precision.INT8)
GPU_PRECISIONS: tuple[Precision, ...] = (Precision.FP32, Precision.TF32, Precision.FP16, Precision.BF16,
                                         Precision.INT8, Precision.FP8)
ALL_PRECISIONS = GPU_PRECISIONS
_NAMES = {Precision.FP32: "FP32", Precision.TF32: "TF32", Precision.FP16: "FP16", Precision.BF16: "BF16",
          Precision.INT8: "INT8", Precision.FP8: "FP8 (e4m3)"}
# The longest one GEMM may take before the size is halved (emulated precisions are very slow).
MAX_SINGLE_S = 0.6


@dataclass(frozen=True)
class GemmResult(Record):
    """Throughput samples of one precision: one per repeat, in TFLOP/s (TOP/s for int8)."""

    precision: Precision
    device: str
    backend: str
    size: int
    samples_tflops: tuple[float, ...]
    gemms_per_repeat: int
    warmup: int
    native: bool | None = None
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tflops(self) -> float:
        """The median over the repeats."""
        return statistics.median(self.samples_tflops)

    @property
    def unit(self) -> str:
        return "TOP/s" if self.precision == Precision.INT8 else "TFLOP/s"

    @property
    def flops_per_gemm(self) -> float:
        return 2.0 * self.size**3

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        tail = {k: d.pop(k) for k in ("gemms_per_repeat", "warmup", "native", "notes", "details")}
        return {**d, "tflops": self.tflops, "unit": self.unit, **tail}


def parse_precision(value: str, choices: Sequence[Precision] = ALL_PRECISIONS, *,
                    where: str = "") -> Precision:
    """``value`` as one of ``choices`` (a :class:`Precision` member where there is one), else a
    :class:`UserError` naming them (``where``: "CPU" / "GPU" for the message)."""
    if value not in choices:
        raise UserError(f"no {where + ' ' if where else ''}GEMM for {value}; choose from {', '.join(choices)}")
    return next(c for c in choices if c == value)


def time_repeats(
    step: Callable[[], Any],
    *,
    ops_per_step: float,
    repeats: int,
    min_repeat_s: float,
    warmup: int = 2,
    sync: Callable[[], None] = lambda: None,
    timer: Callable[[Callable[[], Any], int], float] | None = None,
) -> tuple[list[float], int]:
    """Run ``step`` ``warmup`` times, calibrate steps per repeat, return (ops/s samples, steps).

    ``timer(step, k)`` returns the seconds ``k`` back-to-back steps take; the default uses
    ``time.perf_counter`` with ``sync`` (e.g. ``torch.cuda.synchronize``) around the steps.
    """
    if repeats < 1:
        raise UserError(f"repeats must be >= 1, not {repeats}")

    def wall(fn: Callable[[], Any], k: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        sync()
        return time.perf_counter() - t0

    timer = timer or wall
    for _ in range(max(0, warmup - 1)):
        step()
    one = max(timer(step, 1), 1e-9)  # the last warm-up step also calibrates
    per_repeat = max(1, math.ceil(min_repeat_s / one))
    samples = []
    for _ in range(repeats):
        seconds = timer(step, per_repeat)
        samples.append(ops_per_step * per_repeat / seconds)
    return samples, per_repeat


def fit_size(seconds_at: Callable[[int], float], size: int, *, probe: int = 256, floor: int = 128) -> int:
    """The largest ``size / 2^k`` whose GEMM should take at most :data:`MAX_SINGLE_S`.

    One GEMM at ``probe`` is timed and scaled by ``n^3``, so an emulated precision (FP16 on most
    CPUs runs at ~1 GFLOP/s) costs a fraction of a second to size instead of minutes.
    """
    if size <= probe:
        return size
    per_flop = seconds_at(probe) / probe**3
    while size > floor and per_flop * size**3 > MAX_SINGLE_S:
        size = max(floor, size // 2)
    return size


# --- CPU --------------------------------------------------------------------------------------


def measure_gemm_cpu(
    precision: Precision | str,
    *,
    size: int,
    repeats: int,
    threads: int,
    min_repeat_s: float = 0.25,
    warmup: int = 2,
    seed: int = 0,
    int8_backend: str = "auto",
    int8_reduce_range: bool | None = None,
    device: Any = None,
) -> GemmResult:
    """Dense GEMM throughput of ``precision`` on the host CPU with ``threads`` threads.

    ``int8_reduce_range``: 7-bit INT8 weights for ONNX Runtime; ``None`` uses them where u8 x s8
    saturates on this CPU (x86 without VNNI).
    """
    import torch

    precision = parse_precision(precision, CPU_PRECISIONS, where="CPU")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # process-global: restored below
    try:
        return _measure_gemm_cpu(torch, precision, size=size, repeats=repeats, threads=threads,
                                 min_repeat_s=min_repeat_s, warmup=warmup, seed=seed,
                                 int8_backend=int8_backend, int8_reduce_range=int8_reduce_range,
                                 device=device)
    finally:
        torch.set_num_threads(before)


def _measure_gemm_cpu(torch: Any, precision: Precision, *, size: int, repeats: int, threads: int, min_repeat_s: float,
                      warmup: int, seed: int, int8_backend: str, int8_reduce_range: bool | None,
                      device: Any) -> GemmResult:
    gen = torch.Generator().manual_seed(seed)
    if precision == Precision.INT8:
        return _int8_cpu(size=size, repeats=repeats, threads=threads, min_repeat_s=min_repeat_s,
                         warmup=warmup, gen=gen, backend=int8_backend, reduce_range=int8_reduce_range)
    dtype = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[precision]
    native = _cpu_native(device, precision)
    operands: dict[int, tuple[Any, Any, Any]] = {}

    def make(n: int) -> tuple[Any, Any, Any]:
        if n not in operands:
            operands.clear()
            a = torch.randn(n, n, generator=gen).to(dtype)
            b = torch.randn(n, n, generator=gen).to(dtype)
            operands[n] = (a, b, torch.empty(n, n, dtype=dtype))
        return operands[n]

    def seconds_at(n: int) -> float:
        a, b, c = make(n)
        torch.matmul(a, b, out=c)  # first call: library setup, page faults
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        return time.perf_counter() - t0

    notes = []
    # only a precision that may lack native arithmetic is shrunk: a loaded machine must not shrink FP32
    fitted = size if native else fit_size(seconds_at, size)
    if fitted != size:
        notes.append(f"one {size}^3 GEMM took over {MAX_SINGLE_S} s, so the size was reduced to {fitted}")
    a, b, c = make(fitted)
    backend, step = f"torch.matmul ({_cpu_blas(torch, precision)})", (lambda: torch.matmul(a, b, out=c))
    details: dict[str, Any] = {"torch": torch.__version__, "threads": threads}
    limit: Callable[[], Any] = contextlib.nullcontext
    if precision == Precision.FP32:
        # The device's figure, not one library's: torch's sgemm and numpy's BLAS (OpenBLAS in the
        # wheels) differ by up to ~20 % on some CPUs (AMD Zen 5: OpenBLAS ahead), so both are probed
        # and the faster one is measured.
        alt = _numpy_sgemm(a, b, threads)
        if alt is not None:
            alt_backend, alt_step, limit = alt
            with limit():
                probe = {backend: _probe_gflops(step, fitted), alt_backend: _probe_gflops(alt_step, fitted)}
            details["fp32_library_probe_gflops"] = {k: round(v, 1) for k, v in probe.items()}
            if probe[alt_backend] > probe[backend]:
                backend, step = alt_backend, alt_step
            else:
                limit = contextlib.nullcontext
    with limit():
        samples, per_repeat = time_repeats(step, ops_per_step=2.0 * fitted**3,
                                           repeats=repeats, min_repeat_s=min_repeat_s, warmup=warmup)
    if native is False:
        notes.append(f"this CPU has no native {precision.upper()} arithmetic; torch emulates it")
    return GemmResult(
        precision=precision, device="cpu", backend=backend, size=fitted,
        samples_tflops=tuple(s / 1e12 for s in samples), gemms_per_repeat=per_repeat, warmup=warmup,
        native=native, notes=tuple(notes), details=details,
    )


def _probe_gflops(step: Callable[[], Any], n: int, calls: int = 3) -> float:
    """GFLOP/s of the fastest of ``calls`` timed calls after one untimed one."""
    step()
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _numpy_sgemm(a: Any, b: Any, threads: int) -> tuple[str, Callable[[], Any], Callable[[], Any]] | None:
    """numpy.matmul on the same operands with its BLAS pool limited to ``threads`` (threadpoolctl),
    or None when numpy's BLAS threads cannot be controlled."""
    try:
        import numpy as np
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None
    blas = sorted({i.get("internal_api", "blas") for i in threadpool_info() if i.get("user_api") == "blas"})
    if not blas:
        return None
    x, y = a.numpy(), b.numpy()
    z = np.empty((x.shape[0], y.shape[1]), dtype=x.dtype)
    return (f"numpy.matmul ({'/'.join(blas)} sgemm)", lambda: np.matmul(x, y, out=z),
            lambda: threadpool_limits(limits=threads, user_api="blas"))


def _cpu_native(device: Any, precision: Precision) -> bool | None:
    if precision == Precision.FP32:
        return True
    if device is None:
        return None
    return precision in tuple(getattr(device, "precisions", ()))


def _cpu_blas(torch: Any, precision: Precision) -> str:
    if precision == Precision.FP32:
        return "MKL sgemm" if torch.backends.mkl.is_available() else "sgemm"
    return "oneDNN" if torch.backends.mkldnn.is_available() else "ATen"


def _int8_cpu(*, size: int, repeats: int, threads: int, min_repeat_s: float, warmup: int, gen: Any,
              backend: str, reduce_range: bool | None) -> GemmResult:
    import torch

    if backend not in ("auto", "onnxruntime", "torch"):
        raise UserError(f"int8 backend must be auto, onnxruntime or torch, not {backend!r}")
    if backend in ("auto", "onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if backend == "onnxruntime":
                raise UserError("onnxruntime is not installed (pip install onnxruntime)") from None
        else:
            return _int8_onnxruntime(size=size, repeats=repeats, threads=threads, min_repeat_s=min_repeat_s,
                                     warmup=warmup, gen=gen, reduce_range=reduce_range)
    a = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=gen)
    b = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=gen)
    samples, per_repeat = time_repeats(lambda: torch._int_mm(a, b), ops_per_step=2.0 * size**3,
                                       repeats=repeats, min_repeat_s=min_repeat_s, warmup=warmup)
    return GemmResult(
        precision=Precision.INT8, device="cpu", backend="torch._int_mm (s8 x s8 -> s32)", size=size,
        samples_tflops=tuple(s / 1e12 for s in samples), gemms_per_repeat=per_repeat, warmup=warmup,
        details={"torch": torch.__version__, "threads": threads},
    )


REDUCED_RANGE_NOTE = "s8 weights in [-64, 63] (reduce_range): u8 x s8 saturates without VNNI"


def _int8_onnxruntime(*, size: int, repeats: int, threads: int, min_repeat_s: float, warmup: int,
                      gen: Any, reduce_range: bool | None) -> GemmResult:
    import numpy as np
    import torch
    from onnx import TensorProto, helper

    from zhisuan.device.cpu import host_u8s8_saturates
    from zhisuan.runtime import load_runtime

    if reduce_range is None:
        reduce_range = host_u8s8_saturates()
    low, high = (-64, 64) if reduce_range else (-128, 128)

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    runtime = load_runtime(model, "onnxruntime", intra_op_threads=threads, inter_op_threads=1)
    session = runtime.session
    a = torch.randint(0, 256, (size, size), dtype=torch.uint8, generator=gen).numpy()
    b = torch.randint(low, high, (size, size), dtype=torch.int8, generator=gen).numpy()
    y = np.empty((size, size), dtype=np.int32)
    # bind inputs and a preallocated output, so each step is the GEMM and not a 16 MB allocation
    binding = session.io_binding()
    binding.bind_cpu_input("A", a)
    binding.bind_cpu_input("B", b)
    binding.bind_output("Y", "cpu", 0, np.int32, list(y.shape), y.ctypes.data)
    samples, per_repeat = time_repeats(lambda: session.run_with_iobinding(binding), ops_per_step=2.0 * size**3,
                                       repeats=repeats, min_repeat_s=min_repeat_s, warmup=warmup)
    probe = slice(0, min(size, 64))
    expected = a[probe].astype(np.int64) @ b[:, probe].astype(np.int64)
    if not np.array_equal(y[probe, probe], expected):
        raise UserError(f"ONNX Runtime MatMulInteger returned wrong results (s8 weights in [{low}, {high - 1}]); "
                        "the INT8 figure is not valid")
    backend = "onnxruntime MatMulInteger (u8 x s8 -> s32, MLAS)"
    weights = f"s8 weights in [{low}, {high - 1}]"
    if reduce_range:
        backend, weights = f"{backend}, 7-bit weights", REDUCED_RANGE_NOTE
    return GemmResult(
        precision=Precision.INT8, device="cpu", backend=backend, size=size,
        samples_tflops=tuple(s / 1e12 for s in samples), gemms_per_repeat=per_repeat, warmup=warmup,
        notes=(REDUCED_RANGE_NOTE,) if reduce_range else (),
        details={"onnxruntime": runtime.info.version, "threads": threads, "checked": "64x64 block exact vs int64",
                 "weights": weights},
    )


# --- NVIDIA GPU (CUDA through torch) ---------------------------------------------------------------


def measure_gemm_cuda(
    precision: Precision | str,
    *,
    size: int,
    repeats: int,
    device_index: int = 0,
    min_repeat_s: float = 0.2,
    warmup: int = 3,
    seed: int = 0,
) -> GemmResult:
    """Dense GEMM throughput of ``precision`` on ``cuda:device_index``, timed with CUDA events."""
    import torch

    precision = parse_precision(precision, GPU_PRECISIONS, where="GPU")
    if not torch.cuda.is_available():
        raise UserError("torch has no CUDA here (CPU build, or no NVIDIA driver)")
    dev = torch.device("cuda", device_index)
    gen = torch.Generator(device=dev).manual_seed(seed)
    cc = torch.cuda.get_device_capability(dev)
    notes: list[str] = []
    with _tf32(torch, precision == Precision.TF32):
        if precision in (Precision.FP32, Precision.TF32, Precision.FP16, Precision.BF16):
            dtype = {Precision.FP32: torch.float32, Precision.TF32: torch.float32, Precision.FP16: torch.float16,
                     Precision.BF16: torch.bfloat16}[precision]
            a = torch.randn(size, size, device=dev, dtype=dtype, generator=gen)
            b = torch.randn(size, size, device=dev, dtype=dtype, generator=gen)
            c = torch.empty(size, size, device=dev, dtype=dtype)

            def step() -> Any:
                return torch.matmul(a, b, out=c)

            backend = f"torch.matmul ({'TF32 on' if precision == 'tf32' else dtype}, cuBLAS)"
        elif precision == Precision.INT8:
            a = torch.randint(-128, 128, (size, size), device=dev, dtype=torch.int8, generator=gen)
            b = torch.randint(-128, 128, (size, size), device=dev, dtype=torch.int8, generator=gen)

            def step() -> Any:
                return torch._int_mm(a, b)

            backend = "torch._int_mm (s8 x s8 -> s32, cuBLASLt)"
        else:  # fp8
            if cc < (8, 9):
                raise UserError(f"FP8 GEMM needs compute capability 8.9 or newer; this GPU is {cc[0]}.{cc[1]}")
            a = torch.randn(size, size, device=dev, generator=gen).to(torch.float8_e4m3fn)
            # _scaled_mm wants the second operand column-major
            b = torch.randn(size, size, device=dev, generator=gen).to(torch.float8_e4m3fn).t().contiguous().t()
            one = torch.ones((), device=dev, dtype=torch.float32)

            def step() -> Any:
                return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

            backend = "torch._scaled_mm (e4m3 x e4m3 -> bf16, per-tensor scales)"
        samples, per_repeat = time_repeats(step, ops_per_step=2.0 * size**3, repeats=repeats,
                                           min_repeat_s=min_repeat_s, warmup=warmup,
                                           timer=_cuda_event_timer(torch, dev))
    return GemmResult(
        precision=precision, device=f"cuda:{device_index}", backend=backend, size=size,
        samples_tflops=tuple(s / 1e12 for s in samples), gemms_per_repeat=per_repeat, warmup=warmup,
        native=True, notes=tuple(notes),
        details={"torch": torch.__version__, "cuda": torch.version.cuda,
                 "compute_capability": f"{cc[0]}.{cc[1]}", "gpu": torch.cuda.get_device_name(dev)},
    )


def _cuda_event_timer(torch: Any, dev: Any) -> Callable[[Callable[[], Any], int], float]:
    def timer(step: Callable[[], Any], k: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(dev)
        start.record()
        for _ in range(k):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return timer


class _tf32:
    """Turn TF32 matmuls on or off for the block and restore the previous setting."""

    def __init__(self, torch: Any, enabled: bool) -> None:
        self._matmul = torch.backends.cuda.matmul
        self._enabled = enabled
        self._new_api = hasattr(self._matmul, "fp32_precision")

    def __enter__(self) -> None:
        if self._new_api:
            self._saved = self._matmul.fp32_precision
            self._matmul.fp32_precision = "tf32" if self._enabled else "ieee"
        else:
            self._saved = self._matmul.allow_tf32
            self._matmul.allow_tf32 = self._enabled

    def __exit__(self, *exc: object) -> None:
        if self._new_api:
            self._matmul.fp32_precision = self._saved
        else:
            self._matmul.allow_tf32 = self._saved


# --- items -------------------------------------------------------------------------------------


def gemm_item(result: GemmResult, peak: PeakEstimate | None) -> Item:
    """The EV-2 item of one precision, with the theoretical peak as its reference."""
    reference = peak.tflops if peak is not None and peak.ops_per_s is not None else None
    method = (f"{result.backend}, {result.size}x{result.size}x{result.size} ({2 * result.size**3 / 1e9:.3g} "
              f"G{'OP' if result.precision == Precision.INT8 else 'FLOP'} each), {result.warmup} warm-up, "
              f"{len(result.samples_tflops)} repeats of {result.gemms_per_repeat} back-to-back GEMMs; "
              "median of the repeats")
    if result.notes:
        method += "; " + "; ".join(result.notes)
    details: dict[str, Any] = {"gemm": result.to_dict(), "key": result.precision in (Precision.FP32, Precision.BF16, Precision.FP16)}
    if peak is not None:
        details["peak"] = peak.to_dict()
    return Item.measured(
        f"EV-2.gemm.{result.precision}", "EV-2", f"Dense GEMM {_NAMES[result.precision]}",
        value=result.tflops, unit=result.unit, method=method, samples=list(result.samples_tflops),
        reference=reference,
        reference_source=(f"theoretical peak: {peak.formula}" if reference is not None and peak else None),
        details=details,
    )


def _skip(precision: Precision, reason: str) -> Item:
    return Item.skipped(f"EV-2.gemm.{precision}", "EV-2", f"Dense GEMM {_NAMES[precision]}", reason=reason,
                        unit="TOP/s" if precision == Precision.INT8 else "TFLOP/s")


@task("EV-2.gemm", clause="EV-2", title="Dense GEMM per precision vs theoretical peak (+ EV-7 energy)",
      est_s={"quick": 15, "standard": 45, "full": 120}, device_kinds=("cpu", "cuda"))
def measure_gemm(ctx: EvalContext) -> list[Item]:
    """Dense GEMM per precision vs theoretical peak (+ EV-7 energy of the FP32 run)."""
    device = ctx.device
    repeats = ctx.pick(quick=5, standard=10, full=20)
    precisions = CPU_PRECISIONS if device.kind == "cpu" else GPU_PRECISIONS
    items: list[Item] = []
    interval = float(getattr(ctx.sampler, "interval_s", 0.0) or 0.0)
    for i, precision in enumerate(ALL_PRECISIONS):
        ctx.progress(f"GEMM {_NAMES[precision]}", done=i, total=len(ALL_PRECISIONS))
        if precision not in precisions:
            items.append(_skip(precision, _unsupported(device.kind, precision)))
            continue
        if device.kind == "cuda" and precision not in device.precisions:
            items.append(_skip(precision, f"{device.name} has no native {precision.upper()} arithmetic "
                                          f"(compute capability {device.details.get('compute_capability')})"))
            continue
        # the FP32 run is the energy window: long enough for several telemetry samples
        min_repeat_s = ctx.pick(quick=0.25, standard=0.4, full=0.5)
        if precision == Precision.FP32 and interval:
            min_repeat_s = max(min_repeat_s, 5 * interval / repeats)
        try:
            if precision == Precision.FP32:
                with energy_window(ctx) as window:
                    result = _measure(ctx, precision, repeats, min_repeat_s)
            else:
                result = _measure(ctx, precision, repeats, min_repeat_s)
        except Exception as exc:  # a backend crash becomes a failed item, not a lost suite
            why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            items.append(Item.failed(f"EV-2.gemm.{precision}", "EV-2", f"Dense GEMM {_NAMES[precision]}",
                                     reason=why))
            if precision == Precision.FP32:
                items.extend(energy_items("EV-7.gemm.fp32", None, "GFLOP/s", _no_reading(
                    f"the FP32 GEMM failed, so there is no performance to set against energy: {why}")))
            continue
        cores = ctx.threads if device.kind == "cpu" else None
        items.append(gemm_item(result, theoretical_peak(device, precision, cores=cores)))
        if precision == Precision.FP32:
            items.extend(energy_items("EV-7.gemm.fp32", result.tflops * 1e3, "GFLOP/s", window.reading))
    ctx.progress("GEMM done", done=len(ALL_PRECISIONS), total=len(ALL_PRECISIONS))
    return items


def _no_reading(reason: str) -> EnergyReading:
    return EnergyReading(None, None, 0.0, None, None, None, None, 0, reason=reason)


def _measure(ctx: EvalContext, precision: Precision, repeats: int, min_repeat_s: float) -> GemmResult:
    device = ctx.device
    if device.kind == "cpu":
        size = int(ctx.options.get("gemm_size") or ctx.pick(quick=2048, standard=3072, full=4096))
        return measure_gemm_cpu(precision, size=size, repeats=repeats, threads=ctx.threads,
                                min_repeat_s=min_repeat_s, seed=ctx.seed, device=device)
    size = int(ctx.options.get("gemm_size") or ctx.pick(quick=4096, standard=8192, full=8192))
    return measure_gemm_cuda(precision, size=size, repeats=repeats, device_index=device.index,
                             min_repeat_s=min_repeat_s, seed=ctx.seed)


def _unsupported(kind: str, precision: Precision) -> str:
    if kind == "cpu" and precision == Precision.TF32:
        return "TF32 is a tensor-core format of NVIDIA GPUs (Ampere and later); CPUs have no TF32 arithmetic"
    if kind == "cpu" and precision == Precision.FP8:
        return "no FP8 GEMM for CPUs in torch or ONNX Runtime here (torch._scaled_mm is a GPU kernel)"
    return f"no {precision.upper()} GEMM path for {kind} devices"
