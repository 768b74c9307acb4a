"""How much does zhisuan's Runtime wrapper add over calling the backend directly?

Runs the same small model (a 3-layer MLP built with onnx.helper, batch 1, where per-call
overhead matters most) through a raw ``onnxruntime.InferenceSession`` and through
``zhisuan.runtime.load_runtime``, interleaving the two in rounds so drift hits both alike, and
prints median latency per call and the ratio zhisuan / raw (1.00 = no overhead).

    python benchmarks/runtime_overhead.py [--calls 2000] [--rounds 7] [--runtime openvino]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_mlp(width: int = 256, depth: int = 3) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        inits += [
            numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) * 0.05, f"w{i}"),
            numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}"),
        ]
        nodes += [helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]), helper.make_node("Relu", [f"g{i}"], [f"h{i}"])]
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_calls(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6  # microseconds per call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import onnxruntime as ort

    from zhisuan.runtime import load_runtime

    model = build_mlp().SerializeToString()
    x = np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    raw = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    ours = load_runtime(model, "onnxruntime", intra_op_threads=args.threads)

    def run_raw():
        return raw.run(["y"], {"x": x})

    def run_ours():
        return ours.run({"x": x})

    np.testing.assert_allclose(run_raw()[0], run_ours()["y"], rtol=1e-6)  # same work
    for fn in (run_raw, run_ours):
        time_calls(fn, args.calls // 10)  # warm-up
    raw_us, ours_us = [], []
    for _ in range(args.rounds):
        raw_us.append(time_calls(run_raw, args.calls))
        ours_us.append(time_calls(run_ours, args.calls))
    ratios = [o / r for o, r in zip(ours_us, raw_us, strict=True)]
    print(f"model: 3x Gemm+Relu 256 wide, batch 1, {args.threads} thread(s); {args.rounds} rounds x {args.calls} calls")
    print(f"raw onnxruntime  median {statistics.median(raw_us):8.1f} us/call (min {min(raw_us):.1f}, max {max(raw_us):.1f})")
    print(f"zhisuan runtime  median {statistics.median(ours_us):8.1f} us/call (min {min(ours_us):.1f}, max {max(ours_us):.1f})")
    print(f"ratio zhisuan/raw: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
