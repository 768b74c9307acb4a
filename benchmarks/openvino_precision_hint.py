"""What OpenVINO's default precision costs on this CPU, and what zhisuan's explicit f32 hint gives.

A 256x256 MatMul+Add built with onnx.helper runs on 20 seeded batches of 8 through ONNX Runtime,
OpenVINO via zhisuan (INFERENCE_PRECISION_HINT=f32, set explicitly), and OpenVINO compiled with
its defaults; each is compared against a float64 numpy reference. Prints the default hint
OpenVINO chose and the median / max of the per-batch max-abs error.

    python benchmarks/openvino_precision_hint.py
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    import openvino as ov

    from zhisuan.runtime import load_runtime

    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 256])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    core = ov.Core()
    default = core.compile_model(core.read_model(data, b""), "CPU")
    runners = {
        "onnxruntime": load_runtime(data, "onnxruntime"),
        "openvino (zhisuan, f32 hint)": load_runtime(data, "openvino"),
    }
    errors: dict[str, list[float]] = {name: [] for name in [*runners, "openvino (defaults)"]}
    for seed in range(20):
        x = np.random.default_rng(seed).standard_normal((8, 256)).astype(np.float32)
        ref = x.astype(np.float64) @ w + b
        for name, rt in runners.items():
            errors[name].append(float(np.abs(rt.run({"x": x})["y"] - ref).max()))
        errors["openvino (defaults)"].append(float(np.abs(default({"x": x})[0] - ref).max()))
    print(f"OpenVINO {ov.__version__} default INFERENCE_PRECISION_HINT on this CPU: {default.get_property('INFERENCE_PRECISION_HINT')}")
    for name, errs in errors.items():
        print(f"{name:30s} max-abs error vs float64: median {np.median(errs):.2e}, max {np.max(errs):.2e} (20 batches)")


if __name__ == "__main__":
    main()
