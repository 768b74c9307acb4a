"""`zhisuan bench` Offline throughput vs the best in-process ONNX Runtime loop (target: ratio >= 0.9).

For each model the same samples (the zoo model's evaluation inputs, batched and padded the same
way), the same ONNX file and the same intra-op thread count are used on both sides:

- loop: a plain ``onnxruntime.InferenceSession`` running pre-built batches back to back
  (samples sorted by length when they are padded, as the Offline SUT sorts them), batch sizes 1, 2, 4, 8, 16, 32 taking turns in 0.25 s slices until each
  has run ``--loop-s`` seconds (after one warm-up run each); the best batch size's samples/s is
  the reference;
- bench: ``zhisuan.bench.inference.bench_model(scenario="offline")`` (calibration, then MLPerf
  LoadGen Offline for ``--duration`` seconds); its figure is LoadGen's ``result_samples_per_second``.

Each repetition brackets the bench run with two loop sweeps (one just before, one just after)
and takes, per batch size, the mean of the two, so that a change in machine load during the
repetition hits both sides alike; the loop reference is the best batch size of that mean. The
ratio is reported per repetition with its median, min and max, and the 1-minute load average.

Run:  python benchmarks/bench_vs_ort_loop.py [--threads 2] [--repeats 3] [--duration 10] [--models efficientnet-lite0 minilm-l6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

BATCHES = (1, 2, 4, 8, 16, 32)


def ort_loop(path: str, samples: Any, threads: int, seconds: float, slice_s: float = 0.25) -> dict[int, float]:
    """samples/s of a bare InferenceSession per batch size, on batches pre-built from ``samples``.

    Batch sizes take turns in slices of ``slice_s`` until each has run ``seconds`` in all, so a
    change in machine load hits every size alike.
    """
    import onnxruntime as ort

    from zhisuan.bench.loadgen import BatchRunner
    from zhisuan.runtime import load_runtime

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    with load_runtime(path, "onnxruntime", intra_op_threads=threads) as rt:  # only to build batches the same way
        batcher = BatchRunner(rt, samples)
        n = len(samples)
        # samples of similar length together, as the Offline SUT batches them (no-op for uniform samples)
        order = sorted(range(n), key=batcher.length) if batcher.pads else list(range(n))
        feeds = {b: [batcher.feeds([order[(start + j) % n] for j in range(b)]) for start in range(0, max(n, b), b)]
                 for b in BATCHES}
    for b in BATCHES:
        session.run(None, feeds[b][0])  # warm-up
    done = dict.fromkeys(BATCHES, 0)
    spent = dict.fromkeys(BATCHES, 0.0)
    index = dict.fromkeys(BATCHES, 0)
    while min(spent.values()) < seconds:
        for b in BATCHES:
            start = time.perf_counter()
            while time.perf_counter() - start < slice_s:
                session.run(None, feeds[b][index[b] % len(feeds[b])])
                index[b] += 1
                done[b] += b
            spent[b] += time.perf_counter() - start
    return {b: done[b] / spent[b] for b in BATCHES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "minilm-l6"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="LoadGen minimum duration (s)")
    parser.add_argument("--loop-s", type=float, default=1.5, help="seconds per batch size in the ORT loop")
    args = parser.parse_args()

    from zhisuan import zoo
    from zhisuan.bench.inference import bench_model, zoo_data
    from zhisuan.runtime import load_runtime

    for name in args.models:
        path = str(zoo.model_path(name))
        with load_runtime(path, "onnxruntime", intra_op_threads=args.threads) as rt:
            data = zoo_data(name, rt.inputs())
        assert data is not None, f"{name} has no evaluation inputs"
        ratios, loops, benches = [], [], []
        for rep in range(1, args.repeats + 1):
            before = ort_loop(path, data.samples, args.threads, args.loop_s)
            result = bench_model(name, scenario="offline", threads=args.threads, duration_s=args.duration)
            after = ort_loop(path, data.samples, args.threads, args.loop_s)
            rates = {b: (before[b] + after[b]) / 2 for b in BATCHES}
            best_b = max(rates, key=rates.__getitem__)
            ratio = (result.samples_per_s or 0.0) / rates[best_b]
            same = (result.samples_per_s or 0.0) / rates[result.batch_size] if result.batch_size in rates else None
            ratios.append(ratio)
            loops.append(rates[best_b])
            benches.append(result.samples_per_s or 0.0)
            sweep = ", ".join(f"b{b} {r:.1f}" for b, r in rates.items())
            print(f"{name} rep {rep}: ORT loop best {rates[best_b]:.1f} samples/s at batch {best_b} ({sweep}); "
                  f"bench offline {result.samples_per_s:.1f} samples/s at batch {result.batch_size} "
                  f"({result.result_validity}, {len(result.attempts)} attempt(s)); ratio {ratio:.3f} "
                  f"(vs the loop at the same batch {same:.3f}); "
                  f"loop best before/after {max(before.values()):.1f}/{max(after.values()):.1f}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{name}: {len(data.samples)} samples ({data.samples.source}), {args.threads} threads; "
              f"ratio bench/loop median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, "
              f"n={len(ratios)}); loop median {statistics.median(loops):.1f} samples/s, "
              f"bench median {statistics.median(benches):.1f} samples/s; target >= 0.9", flush=True)


if __name__ == "__main__":
    main()
