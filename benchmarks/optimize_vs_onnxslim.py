"""zhisuan optimize vs onnxslim on the zoo: node count, file size and ONNX Runtime latency.

For each zoo model three variants are built in the same run: the original, ``onnxslim.slim()``
and ``zhisuan.optimize.optimize_model()`` (default pipeline, verified). Latency: one ORT CPU
session per variant (default graph optimizations, fixed thread count); timing rounds are
interleaved (round r times every variant before round r+1 starts) so machine noise hits all
variants alike; each round reports the median of ``--iters`` runs, and the table shows the
median over rounds with the spread (min-max of the round medians). Ratios are zhisuan / onnxslim.

Run:  python benchmarks/optimize_vs_onnxslim.py --models ppocr-cls,efficientnet-lite0 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim

from zhisuan import zoo
from zhisuan.inputs import sample_inputs
from zhisuan.optimize import optimize_model
from zhisuan.optimize.driver import plausible_feeds

DEFAULT_MODELS = ["ppocr-cls", "ppocr-rec", "ppocr-det", "silero-vad", "efficientnet-lite0", "resnet50",
                  "minilm-l6", "bert-base", "gpt2-small"]

#: Sizes for dynamic non-batch dims, per model (default 16): the detector needs a real image size.
DYNAMIC_DIM = {"ppocr-det": 160, "ppocr-rec": 160}


def feeds_for(model: onnx.ModelProto, dynamic: int) -> dict[str, np.ndarray]:
    """Seeded random inputs; dynamic dims (except batch) get ``dynamic`` (ppocr-det needs > 16)."""
    from zhisuan.inputs import model_inputs

    if any(v.name == "sr" for v in model.graph.input):  # silero-vad: 512 samples + 64 context at 16 kHz
        rng = np.random.default_rng(0)
        return {"input": (0.1 * rng.standard_normal((1, 576))).astype(np.float32),
                "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    specs = model_inputs(model)
    names = {d: (1 if axis == 0 else dynamic) for s in specs for axis, d in enumerate(s.shape) if isinstance(d, str)}
    if "total_sequence" in names:  # gpt2 with KV cache: mask covers past + new tokens
        names["total_sequence"] = names.get("sequence", dynamic) + names.get("past_sequence", dynamic)
    feed = sample_inputs(model, dim_values=names)[0] if names else sample_inputs(model)[0]
    return plausible_feeds(feed)


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def time_round(sess: ort.InferenceSession, feed: dict[str, np.ndarray], iters: int) -> float:
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def bench_model(name: str, rounds: int, iters: int, threads: int) -> dict:
    original = onnx.load(zoo.export(name).path)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        slim = onnxslim.slim(original)
    slim_s = time.perf_counter() - t
    t = time.perf_counter()
    feed = feeds_for(original, DYNAMIC_DIM.get(name, 16))
    result = optimize_model(original, feeds=[feed])
    ours_s = time.perf_counter() - t
    variants = {"original": original, "onnxslim": slim, "zhisuan": result.model}
    sessions = {k: session(m, threads) for k, m in variants.items()}
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, feed)
    per_round: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, s in sessions.items():
            per_round[k].append(time_round(s, feed, iters))
    row = {"model": name, "build_s": {"onnxslim": round(slim_s, 2), "zhisuan": round(ours_s, 2)},
           "verified_max_abs_error": result.verification.worst.max_abs_error}
    for k, m in variants.items():
        lat = per_round[k]
        row[k] = {
            "nodes": len(m.graph.node), "bytes": m.ByteSize(),
            "latency_ms_median": statistics.median(lat), "latency_ms_min": min(lat), "latency_ms_max": max(lat),
        }
    row["ratio_vs_onnxslim"] = {
        "nodes": row["zhisuan"]["nodes"] / max(1, row["onnxslim"]["nodes"]),
        "bytes": row["zhisuan"]["bytes"] / row["onnxslim"]["bytes"],
        "latency": row["zhisuan"]["latency_ms_median"] / row["onnxslim"]["latency_ms_median"],
    }
    return row


def format_row(row: dict) -> str:
    cells = [row["model"]]
    for k in ("original", "onnxslim", "zhisuan"):
        v = row[k]
        cells.append(f"{v['nodes']} / {v['bytes'] / 2**20:.2f} MiB / {v['latency_ms_median']:.2f} "
                     f"({v['latency_ms_min']:.2f}-{v['latency_ms_max']:.2f}) ms")
    r = row["ratio_vs_onnxslim"]
    cells.append(f"{r['nodes']:.3f} / {r['bytes']:.4f} / {r['latency']:.3f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", default=None, help="Also write the rows as JSON here.")
    args = ap.parse_args()
    print(f"onnxruntime {ort.__version__}, onnxslim {onnxslim.__version__}, onnx {onnx.__version__}, "
          f"threads {args.threads}, rounds {args.rounds} x {args.iters} iters (interleaved)")
    print("| model | original: nodes / size / latency median (min-max of round medians) | onnxslim | zhisuan "
          "| zhisuan/onnxslim nodes / size / latency |")
    print("|---|---|---|---|---|")
    rows = []
    for name in args.models.split(","):
        row = bench_model(name.strip(), args.rounds, args.iters, args.threads)
        rows.append(row)
        print(format_row(row), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
