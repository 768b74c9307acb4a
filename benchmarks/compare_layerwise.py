"""Time `compare --layerwise` on MiniLM-L6: REF fp32 on ONNX Runtime against (a) its int8
dynamic-quantized copy on ONNX Runtime and (b) the same file on OpenVINO f32.

Run:  python benchmarks/compare_layerwise.py [--repeats 3]
Prints, per case, the wall time of compare_models (median, min, max over the repeats) and its
phases (pairing, loading sessions, running), plus the first divergent node.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random", type=int, default=1, help="input batches per comparison")
    args = parser.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from zhisuan import zoo
    from zhisuan.compare import CompareConfig, compare_models

    ref = zoo.export("minilm-l6").path
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "minilm-int8.onnx"
        quantize_dynamic(str(ref), str(int8), weight_type=QuantType.QInt8)
        cases = {
            "int8-dynamic on onnxruntime": (int8, CompareConfig(layerwise=True, random=args.random, atol=0.05, rtol=0.05, min_cosine=0.99)),
            "same file on openvino f32": (ref, CompareConfig(layerwise=True, random=args.random, cand_runtime="openvino")),
        }
        for label, (cand, config) in cases.items():
            walls, phases = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = compare_models(ref, cand, config)
                walls.append(time.perf_counter() - started)
                phases.append(result.timings_s)
            first = result.first_divergence
            print(
                f"{label}: median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}, "
                f"n={args.repeats}); layers {len(result.layers)}, pairing {result.pairing['method']}; "
                f"phases (median) pairing {statistics.median(p['pairing'] for p in phases):.2f} s, "
                f"load {statistics.median(p['load'] for p in phases):.2f} s, "
                f"run {statistics.median(p['run'] for p in phases):.2f} s; "
                f"first divergence: {first.node if first else None}"
            )


if __name__ == "__main__":
    main()
