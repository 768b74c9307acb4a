"""zhisuan quantize vs ONNX Runtime's ``quantize_static`` defaults, per zoo model, in one run.

For each model: the FP32 model, ORT ``quantize_static`` with its defaults (QDQ, S8 activations,
S8 weights, per-tensor, MinMax) calibrated on the same realistic zoo inputs as zhisuan, and
zhisuan's ``int8`` (static QDQ U8/S8 per-channel on the preprocessed graph) and ``int8-dynamic``.
Accuracy is the zoo task metric on the evaluation set (calibration data comes from another seed
or other photos). Throughput: one realistic batch, intra-op threads 2, ORT_ENABLE_ALL, the models
interleaved round by round (the machine may be shared), median of ROUNDS x RUNS runs, with p10-p90.

    python benchmarks/quantize_vs_ort.py [--models efficientnet-lite0 minilm-l6] [--rounds 5]
    python benchmarks/quantize_vs_ort.py --models ppocr-rec --search   # adds --max-drop 1 (slow)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = {
    "efficientnet-lite0": lambda rng: {"image": rng.standard_normal((8, 3, 224, 224)).astype(np.float32)},
    "minilm-l6": lambda rng: {"input_ids": rng.integers(1000, 20000, (16, 64)).astype(np.int64),
                              "attention_mask": np.ones((16, 64), np.int64)},
    "ppocr-rec": lambda rng: {"x": rng.uniform(-1, 1, (8, 3, 48, 320)).astype(np.float32)},
    "ppocr-cls": lambda rng: {"x": rng.uniform(-1, 1, (16, 3, 48, 192)).astype(np.float32)},
}


def _ort_default(src: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import quantize_static

    class Reader:
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(src), str(out), Reader())


def _throughput(paths: dict[str, Path], feed: dict[str, np.ndarray], rounds: int, runs: int) -> dict[str, dict[str, float]]:
    from zhisuan.quantize.metrics import latency_ms

    lat = latency_ms(paths, feed, threads=2, rounds=rounds, runs=runs)
    batch = next(iter(feed.values())).shape[0]
    return {k: {"items_per_s": batch * 1000 / v["median_ms"], "median_ms": v["median_ms"],
                "p10_ms": v["p10_ms"], "p90_ms": v["p90_ms"], "runs": v["runs"]} for k, v in lat.items()}


def bench(name: str, work: Path, rounds: int, runs: int, search: bool) -> dict:
    import logging

    from zhisuan import zoo
    from zhisuan.quantize import QuantizeConfig, quantize_model
    from zhisuan.quantize.calibration import CALIB_SEED, zoo_feeds

    logging.getLogger().setLevel(logging.ERROR)
    src = zoo.export(name).path
    paths = {"fp32": src}
    info: dict[str, dict] = {}
    paths["ort-default"] = work / f"{name}-ort.onnx"
    _ort_default(src, paths["ort-default"], zoo_feeds(name, seed=CALIB_SEED))
    for mode in ("int8", "int8-dynamic"):
        out = work / f"{name}-{mode}.onnx"
        start = time.monotonic()
        res = quantize_model(name, out, config=QuantizeConfig(mode=mode), measure_latency=False)
        paths[f"zhisuan-{mode}"] = out
        info[f"zhisuan-{mode}"] = {"seconds": time.monotonic() - start}
        del res
    if search:
        out = work / f"{name}-search.onnx"
        start = time.monotonic()
        res = quantize_model(name, out, config=QuantizeConfig(metric=f"zoo:{name}", max_drop_pct=1.0, time_budget_s=900),
                             measure_latency=False)
        paths["zhisuan-int8-maxdrop1"] = out
        info["zhisuan-int8-maxdrop1"] = {"seconds": time.monotonic() - start, "float_layers": len(res.float_layers),
                                          "stopped": res.search["stopped"] if res.search else None}
    scores = {k: zoo.evaluate(name, model=p, intra_op_threads=2).value for k, p in paths.items()}
    speed = _throughput(paths, BATCHES[name](np.random.default_rng(0)), rounds, runs)
    rows = {}
    for k in paths:
        rows[k] = {"metric": scores[k], "drop_pct": 100 * (scores["fp32"] - scores[k]) / scores["fp32"],
                   **speed[k], "x_fp32": speed[k]["items_per_s"] / speed["fp32"]["items_per_s"],
                   "x_ort_default": speed[k]["items_per_s"] / speed["ort-default"]["items_per_s"], **info.get(k, {})}
    return {"model": name, "metric": zoo.get(name).metric, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "minilm-l6", "ppocr-cls", "ppocr-rec"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--search", action="store_true", help="also run --max-drop 1 with the zoo metric (slow)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench(name, Path(tmp), args.rounds, args.runs, args.search)
            results.append(r)
            print(f"\n{name} ({r['metric']}), {args.rounds}x{args.runs} interleaved runs, 2 threads")
            print(f"{'variant':24} {'metric':>7} {'drop%':>7} {'items/s':>9} {'p10-p90 ms':>17} {'xFP32':>6} {'xORTdef':>7}")
            for k, row in r["rows"].items():
                print(f"{k:24} {row['metric']:7.3f} {row['drop_pct']:7.2f} {row['items_per_s']:9.1f} "
                      f"{row['p10_ms']:8.1f}-{row['p90_ms']:<8.1f} {row['x_fp32']:6.2f} {row['x_ort_default']:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
