"""Time `compare --layerwise` on a ~2 MB conv net with large activations (issue 11 point 8).

REF: a float conv net built here (~2.2 MB of weights, mostly in its last Gemm; six intermediate
tensors of 1 MB and six of 0.5 MB per sample); CAND: its static QDQ INT8 copy (ONNX Runtime
quantizer, U8 activations / S8 weights). 64 random samples of 1x3x128x128 by default.

Run:  python benchmarks/compare_layerwise_activations.py [--repeats 3] [--samples 64] [--profile]
Prints the wall time of compare_models (median, min, max over the repeats), its phases, and
with --profile the top of a cProfile of one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 128


def build(path: Path) -> None:
    """Two stages (conv 3x3, depthwise 3x3, pointwise 1x1, each + Relu) at 128x128 and 64x64,
    then 8x8 average pooling and a 2048x256 Gemm that holds most of the weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def conv(name: str, x: str, cin: int, cout: int, k: int, *, stride: int = 1, group: int = 1) -> str:
        w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (k * k * cin // group))).astype(np.float32)
        b = (0.05 * rng.standard_normal(cout)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                      pads=[k // 2] * 4, strides=[stride] * 2, group=group))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    t = conv("c1", "x", 3, 16, 3)
    t = conv("dw1", t, 16, 16, 3, group=16)
    t = conv("pw1", t, 16, 16, 1)
    t = conv("c2", t, 16, 32, 3, stride=2)
    t = conv("dw2", t, 32, 32, 3, group=32)
    t = conv("pw2", t, 32, 32, 1)
    nodes.append(helper.make_node("AveragePool", [t], ["pool"], name="pool", kernel_shape=[8, 8], strides=[8, 8]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flat"))
    w = (rng.standard_normal((2048, 256)) / np.sqrt(2048)).astype(np.float32)
    inits.extend([numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(np.zeros(256, np.float32), "fc_b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc"))
    graph = helper.make_graph(
        nodes, "activations",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self._it = iter([{"x": rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one extra run")
    args = parser.parse_args()

    from zhisuan.compare import CompareConfig, compare_models

    with tempfile.TemporaryDirectory() as tmp:
        ref, cand = Path(tmp) / "ref.onnx", Path(tmp) / "int8.onnx"
        build(ref)
        quantize(ref, cand)
        print(f"REF {ref.stat().st_size / 1e6:.2f} MB, CAND {cand.stat().st_size / 1e6:.2f} MB, {args.samples} samples")
        config = CompareConfig(layerwise=True, random=args.samples, atol=0.05, rtol=0.05, min_cosine=0.99)
        walls, phases = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = compare_models(ref, cand, config)
            walls.append(time.perf_counter() - started)
            phases.append(result.timings_s)
        keys = [k for k in phases[0] if k != "total"]
        summary = ", ".join(f"{k} {statistics.median(p[k] for p in phases):.2f}" for k in keys)
        print(
            f"wall: median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}, "
            f"n={args.repeats}); reported total (median) {statistics.median(p['total'] for p in phases):.2f} s; "
            f"phases (median, s) {summary}; layers {len(result.layers)}; within {result.within_tolerance}; "
            f"output max abs {result.outputs[0].measurement.metrics.max_abs_error:.4g}"
        )
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            compare_models(ref, cand, config)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
