"""EV-3 memory: STREAM bandwidth, usable capacity, and host<->device transfer bandwidth.

**STREAM** (McCalpin) kernels on three float64 arrays, each well beyond the last-level cache
(at least 4x the LLC and 64 MiB; GPUs at least 4x L2 and 512 MiB), run with torch in place
(``out=``, no allocation) and multithreaded on CPUs (``ctx.threads``), in the STREAM order:

=======  =================  ==================
kernel   operation          bytes per element
=======  =================  ==================
copy     ``c = a``          16 (2 arrays)
scale    ``b = q c``        16 (2 arrays)
add      ``c = a + b``      24 (3 arrays)
triad    ``a = b + q c``    24 (3 arrays)
=======  =================  ==================

As in STREAM, the figure is the *best* rate over the repeats (the first pass is a warm-up and
not counted); the median and the spread are kept too, and the results are checked against the
values STREAM's own validation expects. GPU kernels are timed with CUDA events.

**Capacity**: on a CPU, MemAvailable (``/proc/meminfo`` via psutil), verified by allocating and
touching a bounded block (quick 1 GiB, never more than 25% of what is available). On a GPU,
``torch.cuda.mem_get_info`` plus a real allocation of (almost) all free memory in 1 GiB blocks,
each written, then freed.

**Host<->device** (GPUs): ``Tensor.copy_`` of 256 MiB between host and device memory, pageable
and pinned (page-locked) host buffers, both directions, timed on the host with synchronisation.
A CPU has no separate device memory: those items are skipped with that reason.

>>> from zhisuan.bench.memory import stream_cpu
>>> results = stream_cpu(array_bytes=8 << 20, repeats=3, threads=1)
>>> sorted(results), results["triad"].bytes_per_element
(['add', 'copy', 'scale', 'triad'], 24)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.device.peak import BandwidthPeak, host_link_peak, memory_bandwidth_peak
from zhisuan.errors import UserError
from zhisuan.results import Record

KERNELS = ("copy", "scale", "add", "triad")
ARRAYS_PER_KERNEL = {"copy": 2, "scale": 2, "add": 3, "triad": 3}
FORMULAS = {"copy": "c = a", "scale": "b = q c", "add": "c = a + b", "triad": "a = b + q c"}
SCALAR = 3.0  # STREAM's q
MIN_ARRAY_BYTES = 64 << 20
MIN_GPU_ARRAY_BYTES = 512 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class StreamResult(Record):
    """One STREAM kernel: bandwidth per timed pass in GB/s (1e9 bytes/s), first pass excluded."""

    kernel: str
    device: str
    array_bytes: int
    element_bytes: int
    samples_gbps: tuple[float, ...]
    validated: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_element(self) -> int:
        return ARRAYS_PER_KERNEL[self.kernel] * self.element_bytes

    @property
    def bytes_per_pass(self) -> int:
        return ARRAYS_PER_KERNEL[self.kernel] * self.array_bytes

    @property
    def best_gbps(self) -> float:
        return max(self.samples_gbps)

    @property
    def median_gbps(self) -> float:
        return statistics.median(self.samples_gbps)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        samples, tail = d.pop("samples_gbps"), {k: d.pop(k) for k in ("validated", "details")}
        return {**d, "bytes_per_element": self.bytes_per_element, "bytes_per_pass": self.bytes_per_pass,
                "samples_gbps": samples, "best_gbps": self.best_gbps, "median_gbps": self.median_gbps, **tail}


def stream_array_bytes(device: Any, *, multiple: int = 4, gpu_l2_bytes: int | None = None) -> int:
    """Bytes per array: ``multiple`` x the last-level cache, at least 64 MiB (512 MiB on GPUs)."""
    if device is not None and device.kind == "cuda":
        return max(MIN_GPU_ARRAY_BYTES, multiple * int(gpu_l2_bytes or 0))
    return max(MIN_ARRAY_BYTES, multiple * last_level_cache_bytes(device))


def last_level_cache_bytes(device: Any) -> int:
    """Total bytes of the highest cache level (size x instances), 0 when unknown."""
    caches = list((getattr(device, "details", None) or {}).get("caches") or [])
    best_level, total = 0, 0
    for cache in caches:
        c = cache if isinstance(cache, dict) else cache.to_dict()
        if c.get("type") == "Instruction":
            continue
        size = int(c.get("size_bytes") or 0) * int(c.get("instances") or 1)
        if c["level"] > best_level:
            best_level, total = c["level"], size
    return total


def _run_stream(
    torch: Any, a: Any, b: Any, c: Any, repeats: int, timer: Callable[[Callable[[], Any]], float]
) -> tuple[dict[str, list[float]], bool]:
    """STREAM's main loop: ``repeats + 1`` passes of the four kernels; seconds per kernel pass."""
    kernels: dict[str, Callable[[], Any]] = {
        "copy": lambda: c.copy_(a),
        "scale": lambda: torch.mul(c, SCALAR, out=b),
        "add": lambda: torch.add(a, b, out=c),
        "triad": lambda: torch.add(b, c, alpha=SCALAR, out=a),
    }
    seconds: dict[str, list[float]] = {k: [] for k in KERNELS}
    for k_pass in range(repeats + 1):
        for name in KERNELS:
            dt = timer(kernels[name])
            if k_pass > 0:  # STREAM drops the first pass
                seconds[name].append(dt)
    # STREAM's check: the same scalar recurrence, compared on a sample of elements
    aj, bj, cj = 1.0, 2.0, 0.0
    for _ in range(repeats + 1):
        cj = aj
        bj = SCALAR * cj
        cj = aj + bj
        aj = bj + SCALAR * cj
    step = max(1, a.numel() // 4096)
    ok = all(
        bool(torch.allclose(t[::step].double().cpu(), torch.full_like(t[::step].double().cpu(), v), rtol=1e-13))
        for t, v in ((a, aj), (b, bj), (c, cj))
    )
    return seconds, ok


def stream_cpu(*, array_bytes: int, repeats: int, threads: int) -> dict[str, StreamResult]:
    """STREAM copy/scale/add/triad on host memory with ``threads`` torch threads."""
    import torch

    if repeats < 1:
        raise UserError(f"repeats must be >= 1, not {repeats}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # process-global: restored below
    try:
        return _stream_cpu(torch, array_bytes, repeats, threads)
    finally:
        torch.set_num_threads(before)


def _stream_cpu(torch: Any, array_bytes: int, repeats: int, threads: int) -> dict[str, StreamResult]:
    n = array_bytes // 8
    # filled (touched) before timing, so page faults are not counted
    a = torch.full((n,), 1.0, dtype=torch.float64)
    b = torch.full((n,), 2.0, dtype=torch.float64)
    c = torch.zeros(n, dtype=torch.float64)

    def timer(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    seconds, ok = _run_stream(torch, a, b, c, repeats, timer)
    return _results("cpu", n, seconds, ok, {"threads": threads, "torch": torch.__version__})


def stream_cuda(*, array_bytes: int, repeats: int, device_index: int = 0) -> dict[str, StreamResult]:
    """STREAM on GPU memory, each kernel timed with CUDA events."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("torch has no CUDA here (CPU build, or no NVIDIA driver)")
    dev = torch.device("cuda", device_index)
    n = array_bytes // 8
    a = torch.full((n,), 1.0, dtype=torch.float64, device=dev)
    b = torch.full((n,), 2.0, dtype=torch.float64, device=dev)
    c = torch.zeros(n, dtype=torch.float64, device=dev)

    def timer(fn: Callable[[], Any]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    torch.cuda.synchronize(dev)
    try:
        seconds, ok = _run_stream(torch, a, b, c, repeats, timer)
    finally:
        del a, b, c
        torch.cuda.empty_cache()
    return _results(f"cuda:{device_index}", n, seconds, ok,
                    {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev)})


def _results(device: str, n: int, seconds: dict[str, list[float]], ok: bool,
             details: dict[str, Any]) -> dict[str, StreamResult]:
    out = {}
    for name in KERNELS:
        moved = ARRAYS_PER_KERNEL[name] * n * 8
        out[name] = StreamResult(name, device, n * 8, 8, tuple(moved / s / 1e9 for s in seconds[name]), ok,
                                 dict(details))
    return out


# --- capacity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityResult(Record):
    """Usable memory in bytes, and the allocation that verified it."""

    device: str
    usable_bytes: int
    total_bytes: int | None
    verified_bytes: int
    touch_gbps: float | None
    source: str
    details: dict[str, Any] = field(default_factory=dict)


def capacity_cpu(*, touch_bytes: int, max_fraction: float = 0.25) -> CapacityResult:
    """MemAvailable, verified by allocating and writing ``touch_bytes`` (at most ``max_fraction`` of it)."""
    import psutil
    import torch

    vm = psutil.virtual_memory()
    size = int(min(touch_bytes, max_fraction * vm.available))
    if size <= 0:
        raise UserError("no memory is available to verify")
    t0 = time.perf_counter()
    block = torch.empty(size, dtype=torch.uint8)
    block.fill_(0x5A)  # every page is written, so the kernel really backs it
    seconds = time.perf_counter() - t0
    step = 4096
    ok = bool((block[::step] == 0x5A).all())
    del block
    if not ok:
        raise UserError(f"the {size} bytes allocated to verify capacity did not hold what was written")
    return CapacityResult("cpu", int(vm.available), int(vm.total), size, size / seconds / 1e9,
                          "MemAvailable (/proc/meminfo via psutil)",
                          {"max_fraction": max_fraction, "verified_pattern": "0x5A every 4 KiB page"})


def capacity_cuda(*, device_index: int = 0, reserve_bytes: int = 256 << 20, block_bytes: int = GiB) -> CapacityResult:
    """Free memory per ``torch.cuda.mem_get_info``, verified by allocating and writing all but ``reserve_bytes``."""
    import torch

    dev = torch.device("cuda", device_index)
    free, total = torch.cuda.mem_get_info(dev)
    target = max(0, free - reserve_bytes)
    blocks, got = [], 0
    t0 = time.perf_counter()
    try:
        while got < target:
            size = min(block_bytes, target - got)
            try:
                block = torch.empty(size, dtype=torch.uint8, device=dev)
            except torch.cuda.OutOfMemoryError:
                if block_bytes <= (64 << 20) or size <= (64 << 20):
                    break
                block_bytes //= 2
                continue
            block.fill_(0x5A)
            blocks.append(block)
            got += size
        torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        ok = all(bool((b[:: 1 << 20] == 0x5A).all()) for b in blocks)
    finally:
        blocks.clear()
        torch.cuda.empty_cache()
    if not ok:
        raise UserError("GPU memory allocated to verify capacity did not hold what was written")
    return CapacityResult(f"cuda:{device_index}", got, int(total), got, got / seconds / 1e9 if seconds else None,
                          "torch.cuda.mem_get_info free memory, then allocated and written in blocks",
                          {"free_bytes_reported": int(free), "reserve_bytes": reserve_bytes})


# --- host <-> device ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferResult(Record):
    direction: str  # "h2d" or "d2h"
    host_memory: str  # "pageable" or "pinned"
    bytes: int
    samples_gbps: tuple[float, ...]

    @property
    def median_gbps(self) -> float:
        return statistics.median(self.samples_gbps)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "median_gbps": self.median_gbps}


def host_device_bandwidth(*, nbytes: int, repeats: int, device_index: int = 0,
                          warmup: int = 2) -> list[TransferResult]:
    """Copies between host and ``cuda:device_index``: pageable/pinned x h2d/d2h."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("torch has no CUDA here (CPU build, or no NVIDIA driver)")
    dev = torch.device("cuda", device_index)
    gpu = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    results = []
    try:
        for host_memory in ("pageable", "pinned"):
            host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=(host_memory == "pinned"))
            host.fill_(1)
            for direction in ("h2d", "d2h"):
                src, dst = (host, gpu) if direction == "h2d" else (gpu, host)
                samples = []
                for i in range(warmup + repeats):
                    torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    dst.copy_(src, non_blocking=(host_memory == "pinned"))
                    torch.cuda.synchronize(dev)
                    if i >= warmup:
                        samples.append(nbytes / (time.perf_counter() - t0) / 1e9)
                results.append(TransferResult(direction, host_memory, nbytes, tuple(samples)))
            del host
    finally:
        del gpu
        torch.cuda.empty_cache()
    return results


# --- items -------------------------------------------------------------------------------------


def stream_items(results: dict[str, StreamResult], peak: BandwidthPeak | None = None) -> list[Item]:
    items = []
    for name in KERNELS:
        r = results[name]
        reference = peak.gbps if peak is not None else None
        method = (f"STREAM {name} ({FORMULAS[name]}) "
                  f"on {r.device} with torch, float64 arrays of {r.array_bytes / 2**20:.0f} MiB, "
                  f"{r.bytes_per_element} bytes counted per element as STREAM does; best of "
                  f"{len(r.samples_gbps)} passes after 1 warm-up pass (STREAM convention), median "
                  f"{r.median_gbps:.4g} GB/s; results {'validated' if r.validated else 'WRONG'}")
        details: dict[str, Any] = {"stream": r.to_dict(), "best_gbps": r.best_gbps, "median_gbps": r.median_gbps}
        if name == "triad":  # one chart of the four kernels, on the headline item
            details["key"] = True
            details["series"] = [
                {"x": list(KERNELS), "y": [results[k].best_gbps for k in KERNELS], "kind": "bar",
                 "label": "best pass", "x_label": "STREAM kernel", "y_label": "bandwidth (GB/s)"},
                {"x": list(KERNELS), "y": [results[k].median_gbps for k in KERNELS], "kind": "bar",
                 "label": "median pass", "x_label": "STREAM kernel", "y_label": "bandwidth (GB/s)"},
            ]
            if reference:
                details["series"][0]["hline"] = {"y": reference, "label": "theoretical bandwidth"}
        if peak is not None:
            details["peak"] = peak.to_dict()
        item_id, title = f"EV-3.stream.{name}", f"Memory bandwidth, STREAM {name}"
        if not r.validated:
            items.append(Item.failed(item_id, "EV-3", title, reason="the arrays do not hold the values STREAM "
                                     "expects after the run", unit="GB/s", method=method, value=r.best_gbps,
                                     details={**details, "timed": False}))
            continue
        items.append(Item.measured(
            item_id, "EV-3", title, value=r.best_gbps, unit="GB/s", method=method,
            samples=list(r.samples_gbps), reference=reference,
            reference_source=f"theoretical memory bandwidth: {peak.formula}" if reference and peak else None,
            details=details,
        ))
    return items


def capacity_item(result: CapacityResult) -> Item:
    method = (f"{result.source}; verified by allocating and writing {result.verified_bytes / GiB:.2f} GiB "
              f"({result.touch_gbps:.3g} GB/s first touch)" if result.touch_gbps else result.source)
    return Item.measured("EV-3.capacity", "EV-3", "Usable memory capacity", value=result.usable_bytes / GiB,
                         unit="GiB", method=method, repeats=1, details={"capacity": result.to_dict()})


def transfer_items(results: list[TransferResult], peak: BandwidthPeak | None) -> list[Item]:
    items = []
    for r in results:
        arrow = "Host to device" if r.direction == "h2d" else "Device to host"
        reference = peak.gbps if peak is not None else None
        items.append(Item.measured(
            f"EV-3.{r.direction}.{r.host_memory}", "EV-3", f"{arrow}, {r.host_memory} host memory",
            value=r.median_gbps, unit="GB/s",
            method=(f"Tensor.copy_ of {r.bytes / 2**20:.0f} MiB, {r.host_memory} host buffer, "
                    f"synchronised wall clock, median of {len(r.samples_gbps)} after 2 warm-up copies"),
            samples=list(r.samples_gbps), reference=reference,
            reference_source=f"host link: {peak.formula}" if reference and peak else None,
            details={"transfer": r.to_dict(), **({"peak": peak.to_dict()} if peak else {})},
        ))
    return items


def _transfer_skips(reason: str) -> list[Item]:
    return [Item.skipped(f"EV-3.{d}.{m}", "EV-3",
                         f"{'Host to device' if d == 'h2d' else 'Device to host'}, {m} host memory",
                         reason=reason, unit="GB/s")
            for m in ("pageable", "pinned") for d in ("h2d", "d2h")]


def _failed_stream(reason: str) -> list[Item]:
    return [Item.failed(f"EV-3.stream.{k}", "EV-3", f"Memory bandwidth, STREAM {k}", reason=reason, unit="GB/s")
            for k in KERNELS]


@task("EV-3.memory", clause="EV-3", title="Memory bandwidth (STREAM), capacity, host<->device",
      est_s={"quick": 8, "standard": 15, "full": 40}, device_kinds=("cpu", "cuda"))
def measure_memory(ctx: EvalContext) -> list[Item]:
    """Memory bandwidth (STREAM), usable capacity and host<->device transfer bandwidth."""
    device = ctx.device
    repeats = ctx.pick(quick=10, standard=20, full=50)
    items: list[Item] = []
    ctx.progress("STREAM", done=0, total=3)
    try:
        if device.kind == "cpu":
            import psutil

            array_bytes = int(ctx.options.get("stream_array_bytes") or stream_array_bytes(device))
            # three arrays, never more than a quarter of available memory
            array_bytes = min(array_bytes, int(psutil.virtual_memory().available * 0.25 / 3))
            results = stream_cpu(array_bytes=array_bytes, repeats=repeats, threads=ctx.threads)
        else:
            import torch

            l2 = getattr(torch.cuda.get_device_properties(device.index), "L2_cache_size", 0)
            array_bytes = int(ctx.options.get("stream_array_bytes") or stream_array_bytes(device, gpu_l2_bytes=l2))
            results = stream_cuda(array_bytes=array_bytes, repeats=repeats, device_index=device.index)
        items.extend(stream_items(results, memory_bandwidth_peak(device) if device.kind == "cuda" else None))
    except Exception as exc:  # one crash becomes failed items, not a lost suite
        items.extend(_failed_stream(f"{type(exc).__name__}: {exc}"))
    ctx.progress("capacity", done=1, total=3)
    try:
        if device.kind == "cpu":
            touch = int(ctx.options.get("capacity_touch_bytes") or ctx.pick(quick=GiB, standard=4 * GiB,
                                                                            full=8 * GiB))
            items.append(capacity_item(capacity_cpu(touch_bytes=touch)))
        else:
            items.append(capacity_item(capacity_cuda(device_index=device.index)))
    except Exception as exc:
        items.append(Item.failed("EV-3.capacity", "EV-3", "Usable memory capacity",
                                 reason=f"{type(exc).__name__}: {exc}", unit="GiB"))
    ctx.progress("host<->device", done=2, total=3)
    if device.kind == "cpu":
        items.extend(_transfer_skips("no accelerator with separate memory: the CPU works in host memory"))
    else:
        try:
            nbytes = int(ctx.options.get("transfer_bytes") or ctx.pick(quick=256 << 20, standard=256 << 20,
                                                                       full=1 << 30))
            items.extend(transfer_items(host_device_bandwidth(nbytes=nbytes, repeats=repeats,
                                                              device_index=device.index), host_link_peak(device)))
        except Exception as exc:
            items.extend(Item.failed(i.id, "EV-3", i.name, reason=f"{type(exc).__name__}: {exc}", unit="GB/s")
                         for i in _transfer_skips("-"))
    ctx.progress("memory done", done=3, total=3)
    return items
