"""EV-4 interconnect: all-reduce and all-gather bandwidth across N processes (torch.distributed).

N worker processes are started on a free localhost port, each joins one process group
(``gloo`` over CPU tensors, ``nccl`` with one GPU per process), and each sweeps the message size.
Per size, after warm-up, every iteration is timed on every rank (synchronised on GPUs); an
iteration's time is the slowest rank's, and the size's time is the median over iterations.
Bandwidths follow nccl-tests (``doc/PERFORMANCE.md``):

- ``algbw = S / t`` with ``S`` the buffer size of all-reduce, and the *gathered* (output) size of
  all-gather, each rank sending ``S / n``;
- ``busbw = algbw x 2(n-1)/n`` for all-reduce and ``algbw x (n-1)/n`` for all-gather, which makes
  the figure comparable with the link's bandwidth whatever the number of ranks.

Workers are plain subprocesses in their own session: a run that hangs past its timeout, or a
rank that dies, gets every worker killed and becomes a ``fail`` item with the reason.

On a CPU the ranks are processes on the same host, so the figure is gloo's shared-host (loopback
TCP) throughput, not a network's.

>>> from zhisuan.bench.collective import bus_bandwidth
>>> bus_bandwidth("all_reduce", algbw_gbps=10.0, ranks=4)
15.0
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zhisuan._child import child_command, child_env
from zhisuan._io import atomic_write_json
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

Collective = Literal["all_reduce", "all_gather"]
COLLECTIVES: tuple[str, ...] = ("all_reduce", "all_gather")
_NAMES = {"all_reduce": "All-reduce", "all_gather": "All-gather"}
KiB, MiB = 1 << 10, 1 << 20


def bus_factor(collective: str, ranks: int) -> float:
    """nccl-tests' factor from algorithm to bus bandwidth."""
    if ranks < 1:
        raise UserError(f"ranks must be >= 1, not {ranks}")
    if collective == "all_reduce":
        return 2.0 * (ranks - 1) / ranks
    if collective in ("all_gather", "reduce_scatter", "all_to_all"):
        return (ranks - 1) / ranks
    if collective in ("broadcast", "reduce"):
        return 1.0
    raise UserError(f"unknown collective {collective!r}")


def bus_bandwidth(collective: str, *, algbw_gbps: float, ranks: int) -> float:
    return algbw_gbps * bus_factor(collective, ranks)


def sweep_sizes(largest: int, *, smallest: int = KiB, factor: int = 4) -> list[int]:
    """``smallest, smallest*factor, ...`` up to and including ``largest`` (bytes)."""
    sizes, size = [], smallest
    while size < largest:
        sizes.append(size)
        size *= factor
    sizes.append(largest)
    return sizes


def iterations_for(size: int, *, target_bytes: int, low: int, high: int) -> int:
    """Iterations that move about ``target_bytes`` at this size, clamped to ``[low, high]``."""
    return max(low, min(high, math.ceil(target_bytes / size)))


@dataclass(frozen=True)
class SizePoint:
    size_bytes: int
    iterations: int
    time_s: float  # median over iterations of the slowest rank's time
    algbw_gbps: float
    busbw_gbps: float

    def to_dict(self) -> dict[str, Any]:
        return {"size_bytes": self.size_bytes, "iterations": self.iterations, "time_us": self.time_s * 1e6,
                "algbw_gbps": self.algbw_gbps, "busbw_gbps": self.busbw_gbps}


@dataclass(frozen=True)
class CollectiveResult(Record):
    collective: str
    backend: str
    ranks: int
    points: tuple[SizePoint, ...]
    # per-iteration busbw at the largest size, for the item's spread
    largest_samples_gbps: tuple[float, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def largest(self) -> SizePoint:
        return self.points[-1]


def summarize(collective: str, ranks: int, size: int, rank_times: Sequence[Sequence[float]]) -> tuple[SizePoint,
                                                                                                     list[float]]:
    """One size's point from each rank's per-iteration seconds (``rank_times[rank][iteration]``)."""
    if not rank_times or any(len(t) != len(rank_times[0]) for t in rank_times) or not rank_times[0]:
        raise UserError("every rank must report the same, non-zero number of iterations")
    slowest = [max(times) for times in zip(*rank_times, strict=True)]
    t = statistics.median(slowest)
    algbw = size / t / 1e9
    factor = bus_factor(collective, ranks)
    point = SizePoint(size, len(slowest), t, algbw, algbw * factor)
    return point, [size / s / 1e9 * factor for s in slowest]


# --- running the workers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_collectives(
    *,
    backend: str,
    ranks: int,
    sizes: Sequence[int],
    collectives: Sequence[str] = COLLECTIVES,
    threads_per_rank: int = 1,
    warmup: int = 3,
    target_bytes: int = 256 * MiB,
    min_iters: int = 5,
    max_iters: int = 50,
    timeout_s: float = 120.0,
    work_dir: str | os.PathLike[str] | None = None,
    progress: Progress = no_progress,
) -> dict[str, CollectiveResult]:
    """Start ``ranks`` workers, run the sweep, return one result per collective.

    Raises :class:`UserError` with the workers' error output when a rank fails or the run
    passes ``timeout_s`` (every worker is killed first).
    """
    if backend not in ("gloo", "nccl"):
        raise UserError(f"backend must be gloo or nccl, not {backend!r}")
    if ranks < 2:
        raise UserError(f"a collective needs at least 2 ranks, not {ranks}")
    for c in collectives:
        bus_factor(c, ranks)
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < ranks * 4:
        raise UserError(f"sizes must be at least {ranks * 4} bytes (one float32 per rank)")
    with tempfile.TemporaryDirectory(prefix="zhisuan-collective-", dir=work_dir) as tmp:
        config = {
            "backend": backend, "world_size": ranks, "sizes": sizes, "collectives": list(collectives),
            "threads": threads_per_rank, "warmup": warmup, "target_bytes": target_bytes,
            "min_iters": min_iters, "max_iters": max_iters, "out_dir": tmp,
            "timeout_s": max(30.0, timeout_s),
        }
        attempts = 3
        for attempt in range(attempts):
            config["port"] = free_port()
            config_path = Path(tmp) / "config.json"
            atomic_write_json(config_path, config)
            failure = _launch(config_path, ranks, timeout_s, progress)
            if failure is None:
                break
            if "address already in use" not in failure.lower() or attempt == attempts - 1:
                raise UserError(f"{backend} collectives failed: {failure}")
        per_rank = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(ranks)]
    results = {}
    for c in collectives:
        points, samples = [], []
        for size in sizes:
            key = f"{c}:{size}"
            point, samples = summarize(c, ranks, size, [r["times"][key] for r in per_rank])
            points.append(point)
        results[c] = CollectiveResult(c, backend, ranks, tuple(points), tuple(samples),
                                      {"torch": per_rank[0].get("torch"), "threads_per_rank": threads_per_rank,
                                       "warmup": warmup, "device": per_rank[0].get("device")})
    return results


_RANK = "zhisuan.bench.children.collective_rank"  # one worker process per rank


def _launch(config_path: Path, ranks: int, timeout_s: float, progress: Progress) -> str | None:
    """Run the workers to the end; None on success, else why they failed (all killed)."""
    logs = [config_path.with_name(f"rank{r}.log") for r in range(ranks)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for r in range(ranks):
            with open(logs[r], "wb") as log:
                procs.append(subprocess.Popen(
                    child_command(_RANK, str(config_path), str(r)), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, env=child_env(),
                ))
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                r = failed[0]
                return f"rank {r} exited with code {codes[r]}: {_tail(logs[r])}"
            if all(c == 0 for c in codes):
                return None
            if time.monotonic() > deadline:
                return (f"the workers did not finish within {timeout_s:.0f} s and were killed; "
                        f"rank 0 said: {_tail(logs[0]) or '(nothing)'}")
            status = config_path.with_name("rank0.progress")
            if status.exists():
                progress(str(json.loads(status.read_text())))
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # the last line of a traceback names the error; keep it and what precedes it, briefly
    return " | ".join(lines[-3:])[-limit:]


# --- items ------------------------------------------------------------------------------------


def collective_item(result: CollectiveResult) -> Item:
    last = result.largest
    name = f"{_NAMES[result.collective]} bus bandwidth ({result.backend}, {result.ranks} ranks)"
    size_meaning = "buffer" if result.collective == "all_reduce" else "gathered output"
    factor = "2(n-1)/n" if result.collective == "all_reduce" else "(n-1)/n"
    method = (f"torch.distributed {result.collective} with {result.backend} across {result.ranks} processes on "
              f"{result.details.get('device', '?')}, {last.size_bytes / MiB:g} MiB {size_meaning}; per iteration "
              f"the slowest rank's time, median of {last.iterations} after warm-up; busbw = algbw x {factor} "
              "(nccl-tests)")
    series = [
        {"x": [p.size_bytes for p in result.points], "y": [p.busbw_gbps for p in result.points],
         "x_label": "message size (bytes)", "y_label": "bandwidth (GB/s)", "label": "busbw", "log_x": True},
        {"x": [p.size_bytes for p in result.points], "y": [p.algbw_gbps for p in result.points],
         "x_label": "message size (bytes)", "y_label": "bandwidth (GB/s)", "label": "algbw", "log_x": True},
    ]
    return Item.measured(
        f"EV-4.{result.collective}", "EV-4", name, value=last.busbw_gbps, unit="GB/s", method=method,
        samples=list(result.largest_samples_gbps) or None, repeats=last.iterations,
        details={"algbw_gbps": last.algbw_gbps, "busbw_gbps": last.busbw_gbps, "time_us": last.time_s * 1e6,
                 "size_bytes": last.size_bytes, "series": series, "key": result.collective == "all_reduce",
                 "sweep": result.to_dict()},
    )


def _skipped(reason: str) -> list[Item]:
    return [Item.skipped(f"EV-4.{c}", "EV-4", f"{_NAMES[c]} bus bandwidth", reason=reason, unit="GB/s")
            for c in COLLECTIVES]


def _failed(reason: str) -> list[Item]:
    return [Item.failed(f"EV-4.{c}", "EV-4", f"{_NAMES[c]} bus bandwidth", reason=reason, unit="GB/s")
            for c in COLLECTIVES]


@task("EV-4.collectives", clause="EV-4", title="All-reduce and all-gather bandwidth (torch.distributed)",
      est_s={"quick": 10, "standard": 30, "full": 90}, device_kinds=("cpu", "cuda"))
def measure_collectives(ctx: EvalContext) -> list[Item]:
    """All-reduce and all-gather algbw/busbw across processes (gloo on CPU, NCCL on GPUs)."""
    device = ctx.device
    largest = ctx.pick(quick=16 * MiB, standard=64 * MiB, full=256 * MiB)
    sizes = sweep_sizes(largest, factor=ctx.pick(quick=16, standard=4, full=2))
    if device.kind == "cpu":
        backend = "gloo"
        ranks = int(ctx.options.get("collective_ranks") or 2)
    else:
        import torch
        import torch.distributed as dist

        backend = "nccl"
        if not dist.is_nccl_available():
            return _skipped("this torch build has no NCCL")
        ranks = torch.cuda.device_count()
        if ranks < 2:
            return _skipped(f"NCCL collectives need at least 2 GPUs; this machine has {ranks} "
                            "(gloo on the CPU is measured in the CPU's report)")
    threads = max(1, ctx.threads // ranks) if backend == "gloo" else 1
    ctx.progress(f"{backend} x{ranks} starting", done=0, total=1)
    try:
        results = run_collectives(
            backend=backend, ranks=ranks, sizes=sizes, threads_per_rank=threads,
            warmup=ctx.pick(quick=3, standard=5, full=10),
            target_bytes=ctx.pick(quick=128 * MiB, standard=512 * MiB, full=2048 * MiB),
            min_iters=ctx.pick(quick=10, standard=10, full=20), max_iters=ctx.pick(quick=30, standard=100, full=200),
            timeout_s=ctx.pick(quick=90.0, standard=300.0, full=900.0),
            work_dir=ctx.work_dir if Path(ctx.work_dir).is_dir() else None,
            progress=lambda text="", **_: ctx.progress(f"{backend} x{ranks}: {text}", done=0, total=1),
        )
    except UserError as exc:
        return _failed(str(exc))
    ctx.progress("collectives done", done=1, total=1)
    return [collective_item(results[c]) for c in COLLECTIVES]
