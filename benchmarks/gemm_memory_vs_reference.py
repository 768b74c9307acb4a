"""Are zhisuan's EV-2 GEMM and EV-3 STREAM figures right? Compare with independent references.

In the same run, interleaved in rounds so that load drift on a shared machine hits both alike:

- FP32 GEMM: ``zhisuan.bench.gemm.measure_gemm_cpu`` (which probes torch and numpy and measures
  the faster) vs a plain ``numpy.matmul`` loop (OpenBLAS) and a plain ``torch.matmul`` loop, same
  size and threads; the ratio that counts is against the faster reference;
- STREAM: ``zhisuan.bench.memory.stream_cpu`` vs McCalpin-style STREAM in C
  (``benchmarks/stream_triad.c``, built now with ``gcc -O3 -fopenmp -march=native`` into a
  temporary directory, ``OMP_NUM_THREADS`` = the same threads), same array size.

Prints per figure the median over rounds, the ratio ours / reference, and the repeat-to-repeat
coefficient of variation (cv) of ours. Target: ratios within 10% of 1 and cv < 3% when quiet.

    python benchmarks/gemm_memory_vs_reference.py [--threads 2] [--size 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def plain_loop(fn, flop: float, repeats: int, min_repeat_s: float) -> list[float]:
    fn()
    t0 = time.perf_counter()
    fn()
    per = max(1, round(min_repeat_s / max(time.perf_counter() - t0, 1e-9)))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per):
            fn()
        out.append(flop * per / (time.perf_counter() - t0) / 1e12)
    return out


def build_stream(tmp: Path) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("no gcc/cc to build the C STREAM reference")
    src = Path(__file__).with_name("stream_triad.c")
    exe = tmp / "stream_triad"
    subprocess.run([cc, "-O3", "-fopenmp", "-march=native", str(src), "-o", str(exe), "-lm"], check=True)
    return exe


def run_c_stream(exe: Path, elements: int, ntimes: int, threads: int) -> dict[str, list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "false"}
    out = subprocess.run([str(exe), str(elements), str(ntimes)], capture_output=True, text=True, env=env,
                         check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    if not all(r["validated"] for r in rows):
        sys.exit("the C STREAM reference failed its own validation")
    return {r["kernel"]: r["samples_gbps"] for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--size", type=int, default=2048, help="GEMM n (n x n x n)")
    parser.add_argument("--repeats", type=int, default=5, help="GEMM repeats per round")
    parser.add_argument("--stream-repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--array-mib", type=int, default=0, help="STREAM MiB per array (default: as EV-3)")
    args = parser.parse_args()
    # the BLAS thread pools read these when numpy/torch load
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from zhisuan.bench.gemm import measure_gemm_cpu
    from zhisuan.bench.memory import stream_array_bytes, stream_cpu
    from zhisuan.device.cpu import CpuProvider

    torch.set_num_threads(args.threads)
    device = CpuProvider().discover().devices[0]
    n = args.size
    flop = 2.0 * n**3
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty_like(a)
    ta, tb, tc = torch.from_numpy(a.copy()), torch.from_numpy(b.copy()), torch.empty(n, n)
    array_bytes = (args.array_mib << 20) or stream_array_bytes(device)
    elements = array_bytes // 8
    print(f"{device.name}, {args.threads} threads; GEMM {n}^3 FP32; STREAM {array_bytes >> 20} MiB per array, "
          f"{args.rounds} interleaved rounds")

    gemm: dict[str, list[float]] = {"zhisuan": [], "numpy": [], "torch": []}
    ours_samples: list[float] = []
    stream_ours: dict[str, list[float]] = {}
    stream_c: dict[str, list[float]] = {}
    stream_ours_cv: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_stream(Path(tmp))
        for r in range(args.rounds):
            res = measure_gemm_cpu("fp32", size=n, repeats=args.repeats, threads=args.threads, min_repeat_s=0.25)
            if res.size != n:
                sys.exit(f"zhisuan measured at {res.size}, not {n}; the comparison would be unfair")
            gemm["zhisuan"].append(res.tflops)
            ours_samples.extend(res.samples_tflops)
            gemm["numpy"].append(statistics.median(plain_loop(lambda: np.matmul(a, b, out=c), flop,
                                                               args.repeats, 0.25)))
            gemm["torch"].append(statistics.median(plain_loop(lambda: torch.matmul(ta, tb, out=tc), flop,
                                                               args.repeats, 0.25)))
            ours = stream_cpu(array_bytes=array_bytes, repeats=args.stream_repeats, threads=args.threads)
            ref = run_c_stream(exe, elements, args.stream_repeats, args.threads)
            for k, result in ours.items():
                stream_ours.setdefault(k, []).append(result.best_gbps)
                stream_ours_cv.setdefault(k, []).append(cv(list(result.samples_gbps)))
                stream_c.setdefault(k, []).append(max(ref[k]))
            print(f"  round {r + 1}: GEMM zhisuan {gemm['zhisuan'][-1] * 1e3:.1f}, numpy {gemm['numpy'][-1] * 1e3:.1f}, "
                  f"torch {gemm['torch'][-1] * 1e3:.1f} GFLOP/s; triad zhisuan {stream_ours['triad'][-1]:.2f}, "
                  f"C {stream_c['triad'][-1]:.2f} GB/s")

    med = {k: statistics.median(v) for k, v in gemm.items()}
    print("\nFP32 GEMM (GFLOP/s, median over rounds of each round's median)")
    print(f"  zhisuan {med['zhisuan'] * 1e3:8.1f}   repeat cv {cv(ours_samples):.1%}   round cv {cv(gemm['zhisuan']):.1%}")
    print(f"  (zhisuan measured with {res.backend}, the faster library in its probe)")
    for ref in ("numpy", "torch"):
        print(f"  {ref:7s} {med[ref] * 1e3:8.1f}   ratio zhisuan/{ref} {med['zhisuan'] / med[ref]:.3f}"
              f"   round cv {cv(gemm[ref]):.1%}")
    best = max(("numpy", "torch"), key=lambda k: med[k])
    print(f"  ratio zhisuan / best reference ({best}) {med['zhisuan'] / med[best]:.3f}  (target: within 10%)")
    print("\nSTREAM (GB/s, best pass per round, median over rounds)")
    for k in ("copy", "scale", "add", "triad"):
        o, r = statistics.median(stream_ours[k]), statistics.median(stream_c[k])
        print(f"  {k:6s} zhisuan {o:7.2f}   C {r:7.2f}   ratio {o / r:.3f}   "
              f"zhisuan repeat cv (median over rounds) {statistics.median(stream_ours_cv[k]):.1%}")


if __name__ == "__main__":
    main()
