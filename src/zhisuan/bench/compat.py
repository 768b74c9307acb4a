"""EV-8 compatibility: ONNX operator conformance per backend, the zoo model x runtime x precision
matrix, and the frameworks present.

**Operator conformance** uses the node test cases that ship inside the ``onnx`` wheel
(``onnx.backend.test.case.node.collect_testcases``: ~1,880 one-operator models with inputs and
expected outputs computed by ONNX's reference implementation). Collecting them runs every
generator (~7 s), so they are collected once per onnx version, in a child process, and stored in
zhisuan's cache in ONNX's own test-data format (``model.onnx`` + ``input_N.pb`` / ``output_N.pb``,
as ``onnx.backend.test.cmd_tools`` writes them). Each backend then runs the cases in its own
child process, one thread each, the backends side by side:

- onnxruntime: ``InferenceSession`` on the CPU execution provider (CUDA EP on a GPU under test);
- openvino: ``Core.compile_model`` on CPU with ``INFERENCE_PRECISION_HINT=f32`` (a CPU with
  avx512_bf16 would otherwise compute f32 models in bf16).

Outputs are compared as ONNX's backend test runner does: same number of outputs, shape and
dtype equal, strings equal, numbers within ``rtol``/``atol`` of the case (default 1e-3 / 1e-7).
A case ends in one of: ``pass``; ``not_supported`` (the backend refused to load or compile the
model); ``run_error`` (it loaded but raised when run); ``wrong_result`` (it ran, the outputs
differ); ``crash`` (the process died or hung on it — the sweep restarts after that case). A
backend process that dies therefore costs one case, never the evaluation.

**Zoo matrix**: every zoo model (quick: the small ones) on every runtime and precision that
applies, on seeded inputs; a combination passes when it loads, runs and every float output has a
cosine similarity >= 0.99 with ONNX Runtime FP32 (integer outputs must be equal).

>>> from zhisuan.bench.compat import compare_outputs
>>> import numpy as np
>>> compare_outputs([np.ones(3, np.float32)], [np.ones(3, np.float32) + 1e-9], rtol=1e-3, atol=1e-7)
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan._child import child_command, child_env
from zhisuan.bench._process import exit_text
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.errors import BackendUnavailableError, InternalError, UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record
from zhisuan.runtime.base import Precision

CLAUSE = "EV-8"
CASE_STATUSES = ("pass", "not_supported", "run_error", "wrong_result", "crash")
SWEEP_BACKENDS = ("onnxruntime", "openvino")
MIN_COSINE = 0.99


# ---------------------------------------------------------------------------------------------
# comparing outputs the way onnx's backend test runner does


def compare_outputs(expected: Sequence[Any], actual: Sequence[Any], *, rtol: float, atol: float,
                    values: bool = True) -> str | None:
    """None when ``actual`` matches ``expected``, else one line saying how it differs.

    Mirrors ``onnx.backend.test.runner.Runner.assert_similar_outputs``. With ``values=False``
    only the structure (count, shapes, dtypes) is compared: for random operators.
    """
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, actual, strict=True)):
        if isinstance(ref, list | tuple):
            if not isinstance(out, list | tuple):
                return f"output {i} is {type(out).__name__}, expected a sequence"
            why = compare_outputs(list(ref), list(out), rtol=rtol, atol=atol, values=values)
            if why:
                return f"output {i}: {why}"
            continue
        if ref is None or out is None:
            if ref is not out:
                return f"output {i} is {'None' if out is None else 'a value'}, expected {'None' if ref is None else 'a value'}"
            continue
        out = np.asarray(out)
        ref = np.asarray(ref)
        if tuple(out.shape) != tuple(ref.shape):
            return f"output {i} has shape {list(out.shape)}, expected {list(ref.shape)}"
        if ref.dtype == object:
            if not np.array_equal(out.astype(object), ref):
                return f"output {i}: strings differ"
            continue
        if out.dtype != ref.dtype:
            return f"output {i} has dtype {out.dtype}, expected {ref.dtype}"
        if not values:
            continue
        out_rtol = rtol
        if out.dtype.name == "bfloat16":
            out_rtol = max(rtol, 2**-6)  # two bfloat16 ulps, as the onnx runner allows
        if out.dtype.kind not in "biufc":  # ml_dtypes (bfloat16, float8, int4) do not promote with floats
            out, ref = out.astype(np.float32), ref.astype(np.float32)
        try:
            np.testing.assert_allclose(out, ref, rtol=out_rtol, atol=atol)
        except AssertionError as exc:
            lines = [ln.strip().rstrip(":") for ln in str(exc).splitlines()
                     if ln.strip().startswith(("Mismatched", "Max absolute")) or "location mismatch" in ln]
            return f"output {i}: " + ("; ".join(lines) or "values differ")
        except TypeError as exc:
            return f"output {i}: cannot compare ({exc})"
    return None


# ---------------------------------------------------------------------------------------------
# the case store: onnx's node tests, collected once per onnx version


@dataclass(frozen=True)
class CaseInfo(Record):
    name: str
    op: str
    opset: int | None  # the default-domain opset the model imports
    rtol: float
    atol: float
    data_sets: int


def _type_kind(value_info: Any) -> str:
    return value_info.type.WhichOneof("value") or "tensor_type"


def _to_proto(value: Any, value_info: Any) -> Any:
    from onnx import TensorProto, numpy_helper

    kind = _type_kind(value_info)
    if kind == "sequence_type":
        return numpy_helper.from_list(value, value_info.name)
    if kind == "optional_type":
        return numpy_helper.from_optional(value, value_info.name)
    if kind == "map_type":
        return numpy_helper.from_dict(value, value_info.name)
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), value_info.name)


def _from_proto(data: bytes, value_info: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    kind = _type_kind(value_info)
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    if kind == "map_type":
        proto = onnx.MapProto()
        proto.ParseFromString(data)
        return numpy_helper.to_dict(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


def _op_of(case: Any, ops_by_name: Mapping[str, str]) -> str:
    nodes = list(case.model.graph.node)
    if len(nodes) == 1:
        node = nodes[0]
        return f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    base = case.name.split("_expanded")[0]
    return ops_by_name.get(base, "(several nodes)")


def _opset_of(model: Any) -> int | None:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return int(versions[0]) if versions else None


def write_cases(cases: Sequence[Any], out: Path) -> list[CaseInfo]:
    """Store onnx ``TestCase`` objects under ``out`` as onnx's cmd_tools does, plus ``index.json``."""
    single = {c.name: _op_of(c, {}) for c in cases if c.model is not None and len(c.model.graph.node) == 1}
    index = []
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case.model is None or not case.data_sets:
            continue
        directory = out / case.name
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(case.model.SerializeToString())
        graph = case.model.graph
        for k, (inputs, outputs) in enumerate(case.data_sets):
            sub = directory / f"test_data_set_{k}"
            sub.mkdir()
            for j, value in enumerate(inputs):
                (sub / f"input_{j}.pb").write_bytes(_to_proto(value, graph.input[j]).SerializeToString())
            for j, value in enumerate(outputs):
                (sub / f"output_{j}.pb").write_bytes(_to_proto(value, graph.output[j]).SerializeToString())
        index.append(CaseInfo(case.name, _op_of(case, single), _opset_of(case.model), float(case.rtol),
                              float(case.atol), len(case.data_sets)))
    (out / "index.json").write_text(json.dumps([c.to_dict() for c in index], indent=1), encoding="utf-8")
    return index


_COLLECT = "zhisuan.bench.children.compat_collect"  # onnx's generators run in a child process


def case_store(*, timeout_s: float = 300.0, root: Path | None = None) -> Path:
    """The directory of stored node test cases for the installed onnx, collected on first use."""
    import onnx

    from zhisuan._io import cache_dir

    parent = root if root is not None else cache_dir("onnx-node-tests")
    target = parent / f"onnx-{onnx.__version__}"
    if (target / "index.json").is_file():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".collect-", dir=parent))
    try:
        done = subprocess.run(child_command(_COLLECT, str(tmp / "cases")), capture_output=True,
                              timeout=timeout_s, check=False, env=child_env())
        if done.returncode != 0:
            tail = (done.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"collecting onnx's node test cases failed: {tail[0][:300]}")
        try:
            os.replace(tmp / "cases", target)  # atomic: readers see all cases or none
        except OSError:
            if not (target / "index.json").is_file():  # another process won the race: fine
                raise
    except subprocess.TimeoutExpired:
        raise UserError(f"collecting onnx's node test cases took over {timeout_s:.0f} s") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_index(store: Path) -> list[CaseInfo]:
    data = json.loads((store / "index.json").read_text(encoding="utf-8"))
    return [CaseInfo(**d) for d in data]


def load_case(store: Path, name: str) -> tuple[bytes, list[tuple[list[Any], list[Any]]]]:
    """The model bytes and the data sets (inputs, expected outputs) of one stored case."""
    import onnx

    directory = store / name
    model_bytes = (directory / "model.onnx").read_bytes()
    graph = onnx.load_from_string(model_bytes).graph
    sets = []
    for sub in sorted(directory.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])):
        inputs = [_from_proto((sub / f"input_{j}.pb").read_bytes(), graph.input[j])
                  for j in range(len(list(sub.glob("input_*.pb"))))]
        outputs = [_from_proto((sub / f"output_{j}.pb").read_bytes(), graph.output[j])
                   for j in range(len(list(sub.glob("output_*.pb"))))]
        sets.append((inputs, outputs))
    return model_bytes, sets


# Operators whose outputs are random by definition: the reference used numpy's generator, a backend
# its own, so only the outputs' structure can be compared (as onnx's runner users filter them out).
RANDOM_OPS = frozenset({"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike"})


def is_random(info: CaseInfo) -> bool:
    """True for cases whose expected values a conforming backend cannot reproduce."""
    if info.op in RANDOM_OPS:
        return True
    # training-mode Dropout draws a mask, except with ratio 0 (then it is the identity)
    return info.name.startswith("test_training_dropout") and "zero_ratio" not in info.name


# ---------------------------------------------------------------------------------------------
# running one case on one backend


Prepared = Callable[[list[Any]], list[Any]]


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    text = (useful or lines or [""])[-1 if useful else 0][:300]
    # the runtime layer's load errors already say who failed ("onnxruntime could not load ...")
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}"


def prepare_onnxruntime(model_bytes: bytes, *, threads: int = 1, device: str = "cpu") -> Prepared:
    import onnx
    import onnxruntime as ort

    from zhisuan.runtime import load_runtime

    # The raw session: operator cases feed sequences, maps, optionals and raw bfloat16/float8
    # values that the runner's feed checks do not take. Logs off: many cases fail on purpose.
    loaded = load_runtime(model_bytes, "onnxruntime", device=device, intra_op_threads=threads, inter_op_threads=1,
                          log_severity_level=4)
    session = loaded.session
    graph = onnx.load_from_string(model_bytes).graph
    initializers = {i.name for i in graph.initializer}
    names = [v.name for v in graph.input if v.name not in initializers]
    out_types = [_ml_dtype(v) for v in graph.output]

    def run(inputs: list[Any]) -> list[Any]:
        feeds = dict(zip(names, inputs, strict=False))
        if not any(_is_raw_float(v) for v in inputs) and not any(t is not None for t in out_types):
            return list(session.run(None, feeds))
        # numpy has no bfloat16/float8: ORT's Python binding moves them only as raw bits + ONNX type
        values = {k: _ort_value(ort, v) for k, v in feeds.items()}
        results = session.run_with_ort_values(None, values)
        return [_from_ort_value(r, t) for r, t in zip(results, out_types, strict=False)]

    return run


# ml_dtypes floats that ORT's Python binding moves only as raw bits (4-bit types are packed: excluded)
_RAW_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu")


def _is_raw_float(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.name in _RAW_FLOATS


def _ml_dtype(value_info: Any) -> Any:
    from onnx import helper

    elem = value_info.type.tensor_type.elem_type if value_info.type.HasField("tensor_type") else 0
    try:
        dtype = helper.tensor_dtype_to_np_dtype(elem) if elem else None
    except (KeyError, ValueError, TypeError):
        return None
    return dtype if dtype is not None and np.dtype(dtype).name in _RAW_FLOATS else None


def _ort_value(ort: Any, value: Any) -> Any:
    from onnx import helper

    array = np.ascontiguousarray(value)
    if array.dtype.name in _RAW_FLOATS:
        bits = array.view(np.uint8 if array.dtype.itemsize == 1 else np.uint16)
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, helper.np_dtype_to_tensor_dtype(array.dtype))
    return ort.OrtValue.ortvalue_from_numpy(array)


def _from_ort_value(value: Any, dtype: Any) -> Any:
    """An output OrtValue as numpy; bfloat16/float8 tensors are copied bit for bit from CPU memory."""
    import ctypes

    if dtype is None or not value.is_tensor():
        return value.numpy()
    shape = tuple(value.shape())
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = ctypes.string_at(value.data_ptr(), size) if size else b""
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def prepare_openvino(model_bytes: bytes, *, threads: int = 1, device: str = "cpu") -> Prepared:
    import openvino as ov

    from zhisuan.runtime import load_runtime

    # fp32 precision: the f32 inference hint; the raw compiled model, since operator cases feed raw
    # bfloat16/float8 bits that the runner's feed checks do not take
    compiled = load_runtime(model_bytes, "openvino", device=device, intra_op_threads=threads).compiled_model
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)
    import onnx

    out_types = [_ml_dtype(v) for v in onnx.load_from_string(model_bytes).graph.output]

    def feed(index: int, value: Any) -> Any:
        if not _is_raw_float(value):
            return np.asarray(value)
        # numpy has no bf16/f8 and OpenVINO would convert the values numerically: copy the raw bits
        array = np.ascontiguousarray(value)
        tensor = ov.Tensor(compiled.inputs[index].get_element_type(), ov.Shape(list(array.shape)))
        bits = array.view(np.uint8 if array.dtype.itemsize == 1 else np.uint16)
        tensor.data.view(bits.dtype)[...] = bits
        return tensor

    def run(inputs: list[Any]) -> list[Any]:
        results = request.infer({i: feed(i, v) for i, v in enumerate(inputs)}, share_inputs=False,
                                share_outputs=False)
        return [_ov_output(results[port], port, t) for port, t in zip(outputs, out_types, strict=False)]

    return run


# OpenVINO element types that numpy lacks; OpenVINO hands them out as raw bits (bf16 in a float16 array)
_OV_RAW_TYPES = {"bf16", "f8e4m3", "f8e5m2", "f8e8m0"}


def _ov_output(result: Any, port: Any, graph_dtype: Any) -> Any:
    if graph_dtype is None or port.get_element_type().get_type_name() not in _OV_RAW_TYPES:
        return result
    array = np.asarray(result)
    if array.dtype.itemsize != np.dtype(graph_dtype).itemsize:
        return array
    return array.view(np.uint8 if array.dtype.itemsize == 1 else np.uint16).view(graph_dtype)


PREPARERS: dict[str, Callable[..., Prepared]] = {
    "onnxruntime": prepare_onnxruntime,
    "openvino": prepare_openvino,
}


@dataclass(frozen=True)
class CaseResult(Record):
    case: str
    status: str  # one of CASE_STATUSES
    detail: str = ""
    seconds: float = 0.0


def run_case(
    prepare: Callable[[bytes], Prepared],
    name: str,
    model_bytes: bytes,
    data_sets: Sequence[tuple[Sequence[Any], Sequence[Any]]],
    *,
    rtol: float,
    atol: float,
    values: bool = True,
) -> CaseResult:
    """Load, run and check one case in this process (the sweep runs it in a child process).

    ``values=False`` (random operators) checks only the outputs' count, shapes and dtypes.
    """
    t0 = time.perf_counter()
    try:
        run = prepare(model_bytes)
    except Exception as exc:
        return CaseResult(name, "not_supported", _first_line(exc), time.perf_counter() - t0)
    for k, (inputs, expected) in enumerate(data_sets):
        try:
            actual = run(list(inputs))
        except Exception as exc:
            return CaseResult(name, "run_error", _first_line(exc), time.perf_counter() - t0)
        why = compare_outputs(list(expected), actual, rtol=rtol, atol=atol, values=values)
        if why:
            return CaseResult(name, "wrong_result", f"data set {k}: {why}"[:400], time.perf_counter() - t0)
    return CaseResult(name, "pass", "", time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# the crash-guarded sweep


class BackendSweep:
    """Runs cases on one backend in a child process; restarts it after a case that crashed or hung."""

    _CHILD = "zhisuan.bench.children.compat_sweep"

    def __init__(self, backend: str, store: Path, cases: Sequence[str], work_dir: Path, *,
                 threads: int = 1, device: str = "cpu", case_timeout_s: float = 60.0,
                 command: Sequence[str] | None = None) -> None:
        self.backend = backend
        self.store = store
        self.cases = list(cases)
        self.work_dir = work_dir
        self.threads = threads
        self.device = device
        self.case_timeout_s = case_timeout_s
        self._command = list(command) if command is not None else child_command(self._CHILD)
        self.results: dict[str, CaseResult] = {}
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._results_path = work_dir / f"{backend}.jsonl"
        self._offset = 0
        self._current: str | None = None
        self._last_event = 0.0

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.cases) and self._proc is None

    def remaining(self) -> list[str]:
        return [c for c in self.cases if c not in self.results]

    def _start(self) -> None:
        todo = self.remaining()
        spec = {"backend": self.backend, "store": str(self.store), "cases": todo,
                "results": str(self._results_path), "threads": self.threads, "device": self.device}
        self._log = open(self.work_dir / f"{self.backend}.log", "ab")  # noqa: SIM115 - closed in _reap
        env = child_env(dict(os.environ, OMP_NUM_THREADS=str(self.threads)))
        self._proc = subprocess.Popen([*self._command, json.dumps(spec)], stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env)
        self._current = None
        self._last_event = time.monotonic()

    def _read_events(self) -> None:
        if not self._results_path.is_file():
            return
        with open(self._results_path, encoding="utf-8") as fh:
            fh.seek(self._offset)
            while True:
                line = fh.readline()
                if not line.endswith("\n"):
                    break  # a partial line: read it next time
                self._offset = fh.tell()
                event = json.loads(line)
                self._last_event = time.monotonic()
                if "start" in event:
                    self._current = event["start"]
                else:
                    self.results[event["case"]] = CaseResult(**event)
                    self._current = None

    def _reap(self, crashed_because: str | None) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._read_events()
        code = self._proc.returncode
        if self._current is not None and self._current not in self.results:
            why = crashed_because or f"the {self.backend} process died with {exit_text(code)}"
            self.results[self._current] = CaseResult(self._current, "crash", why)
            self.restarts += 1
        elif code != 0 and crashed_because is None and self.remaining():
            raise InternalError(f"the {self.backend} sweep process exited with {exit_text(code)} between cases")
        self._proc = None
        self._current = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def poll(self) -> bool:
        """Advance the sweep; True once every case has a result."""
        if self._proc is None:
            if not self.remaining():
                return True
            self._start()
            return False
        self._read_events()
        if self._proc.poll() is not None:
            self._reap(None)
        elif self._current is not None and time.monotonic() - self._last_event > self.case_timeout_s:
            self._reap(f"no result within {self.case_timeout_s:.0f} s; the process was killed")
        return self._proc is None and not self.remaining()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def run_sweeps(sweeps: Sequence[BackendSweep], *, progress: Progress = no_progress,
               total_timeout_s: float | None = None, poll_s: float = 0.05) -> None:
    """Drive every sweep side by side until all are done (or the total deadline passes)."""
    deadline = time.monotonic() + total_timeout_s if total_timeout_s else None
    total = sum(len(s.cases) for s in sweeps)
    try:
        while True:
            finished = [s.poll() for s in sweeps]
            progress("running node test cases", done=sum(len(s.results) for s in sweeps), total=total)
            if all(finished):
                return
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"the operator conformance sweep did not finish within {total_timeout_s:.0f} s")
            time.sleep(poll_s)
    finally:
        for sweep in sweeps:
            sweep.stop()


def select_cases(names: Sequence[str], count: int | None, seed: int) -> list[str]:
    """A seeded sample of ``count`` case names (all of them when ``count`` is None), in name order."""
    ordered = sorted(names)
    if count is None or count >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, count))


@dataclass(frozen=True)
class ConformanceSummary(Record):
    backend: str
    version: str | None
    cases: int
    counts: dict[str, int]
    per_opset: dict[str, dict[str, int]]  # opset -> {"cases": n, "pass": n}
    failures: dict[str, list[dict[str, str]]]  # status -> [{"case", "op", "detail"}]
    failed_ops: dict[str, list[str]]  # status -> ops with at least one such case
    restarts: int
    seconds: float

    @property
    def pass_rate(self) -> float:
        return self.counts.get("pass", 0) / self.cases if self.cases else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "pass_rate": self.pass_rate}


def summarize_sweep(backend: str, version: str | None, infos: Mapping[str, CaseInfo],
                    results: Mapping[str, CaseResult], restarts: int, seconds: float) -> ConformanceSummary:
    counts = Counter(r.status for r in results.values())
    per_opset: dict[str, dict[str, int]] = defaultdict(lambda: {"cases": 0, "pass": 0})
    failures: dict[str, list[dict[str, str]]] = defaultdict(list)
    failed_ops: dict[str, set[str]] = defaultdict(set)
    for name in sorted(results):
        result, info = results[name], infos[name]
        key = str(info.opset) if info.opset is not None else "other domain"
        per_opset[key]["cases"] += 1
        if result.status == "pass":
            per_opset[key]["pass"] += 1
        else:
            failures[result.status].append({"case": name, "op": info.op, "detail": result.detail})
            failed_ops[result.status].add(info.op)
    order = sorted(per_opset, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    return ConformanceSummary(
        backend=backend, version=version, cases=len(results),
        counts={s: counts.get(s, 0) for s in CASE_STATUSES},
        per_opset={k: per_opset[k] for k in order}, failures=dict(failures),
        failed_ops={k: sorted(v) for k, v in failed_ops.items()}, restarts=restarts, seconds=seconds,
    )


# ---------------------------------------------------------------------------------------------
# frameworks


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_FRAMEWORKS = (
    ("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("onnxruntime-gpu", "onnxruntime-gpu"),
    ("openvino", "openvino"), ("torch", "torch"), ("tensorrt", "tensorrt"),
    ("mlperf_loadgen", "mlcommons-loadgen"), ("numpy", "numpy"), ("onnxscript", "onnxscript"),
    ("onnxslim", "onnxslim"), ("scikit-learn", "scikit-learn"), ("safetensors", "safetensors"),
    ("tokenizers", "tokenizers"), ("ray", "ray"), ("tritonclient", "tritonclient"),
)


def framework_table() -> list[dict[str, Any]]:
    """Every framework zhisuan can use: installed version (or None), and what each runtime reaches."""
    from zhisuan.runtime import backend_status

    reach = {s.name: s for s in backend_status()}
    rows = []
    for name, dist in _FRAMEWORKS:
        row: dict[str, Any] = {"framework": name, "distribution": dist, "version": _version(dist)}
        status = reach.get(name)
        if status is not None:
            row["available"] = status.available
            row["devices"] = list(status.devices)
            if not status.available:
                row["reason"] = status.reason
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# zoo model x runtime x precision


@dataclass(frozen=True)
class MatrixCell(Record):
    model: str
    runtime: str
    precision: Precision
    status: str  # "match", "mismatch", "load_error", "run_error", "n/a"
    min_cosine: float | None = None
    ran_as: str | None = None  # the precision the backend reports it computed in
    detail: str = ""
    seconds: float = 0.0

    @property
    def applicable(self) -> bool:
        return self.status != "n/a"


def zoo_feeds(name: str, specs: Sequence[Any], seed: int) -> dict[str, np.ndarray]:
    """One feed zoo model ``name`` accepts: its first realistic ``calib`` feed (valid sample rates,
    recurrent states and caches from the model itself), else a seeded random one from ``specs``."""
    from zhisuan import zoo
    from zhisuan.runtime.feeds import random_feeds

    made = zoo.get(name).realistic_inputs("calib", batches=1, seed=seed)
    if made:
        return made[0]
    dims = {"batch": 1, "sequence": 8, "past_sequence": 8, "total_sequence": 16}
    return random_feeds(specs, batch=1, seed=seed, dim_values=dims)


def zoo_matrix_models(*, quick: bool) -> list[str]:
    """The zoo models of the EV-8 matrix: every entry, or in the quick suite those marked ``quick``."""
    from zhisuan import zoo

    return [e.name for e in zoo.entries() if e.quick or not quick]


def _matrix_combos(device_kind: str) -> list[tuple[str, Precision]]:
    fp32, fp16, bf16 = Precision.FP32, Precision.FP16, Precision.BF16
    if device_kind == "cuda":
        return [("onnxruntime", fp32), ("onnxruntime", fp16), ("torch", fp32), ("torch", fp16),
                ("torch", bf16), ("openvino", fp32)]
    return [("onnxruntime", fp32), ("onnxruntime", fp16), ("openvino", fp32), ("openvino", bf16),
            ("openvino", fp16), ("torch", fp32), ("torch", bf16), ("torch", fp16)]


def _precision(value: Precision | str) -> Precision:
    try:
        return Precision(value)
    except ValueError:
        raise UserError(f"unknown precision {value!r}; choose one of: {', '.join(Precision)}") from None


def _fp16_model(path: Path, out: Path) -> Path:
    """The model with float16 weights and compute (inputs/outputs stay float32), by ORT's converter."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(converted, str(out))
    return out


def compare_to_reference(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """The smallest cosine over float outputs (integer outputs must match exactly) and a note."""
    from zhisuan.compare.metrics import cosine_similarity

    worst, notes = 1.0, []
    for name, ref in reference.items():
        if name not in outputs:
            return 0.0, f"output {name!r} is missing"
        out = np.asarray(outputs[name])
        if out.shape != ref.shape:
            return 0.0, f"output {name!r} has shape {list(out.shape)}, expected {list(ref.shape)}"
        if np.issubdtype(ref.dtype, np.floating):
            if not np.all(np.isfinite(out)):
                return 0.0, f"output {name!r} has non-finite values"
            cos = cosine_similarity(ref, out)
        else:
            cos = 1.0 if np.array_equal(ref, out) else 0.0
        if cos < worst:
            worst = cos
            notes = [f"worst output {name!r}"]
    return worst, "; ".join(notes)


def run_matrix_model(
    name: str,
    *,
    device: str,
    device_kind: str,
    threads: int,
    seed: int,
    work_dir: Path,
    combos: Sequence[tuple[str, Precision | str]] | None = None,
) -> list[MatrixCell]:
    """Load and run one zoo model on every runtime x precision; compare with ONNX Runtime FP32."""
    from zhisuan import zoo
    from zhisuan.runtime import load_runtime
    from zhisuan.runtime.onnx_signature import onnx_signature

    path = zoo.model_path(name)
    inputs, _ = onnx_signature(path)
    feeds = zoo_feeds(name, inputs, seed)
    with load_runtime(path, "onnxruntime", device="cpu", intra_op_threads=threads) as rt:
        reference = rt.run(feeds)
    entry = zoo.get(name)
    torch_model = None
    cells = []
    for runtime, name_of_precision in combos or _matrix_combos(device_kind):
        precision = _precision(name_of_precision)
        t0 = time.perf_counter()
        if runtime == "torch" and entry.torch_model is None:
            cells.append(MatrixCell(name, runtime, precision, "n/a", detail="ships as ONNX only; no PyTorch module"))
            continue
        if runtime == "openvino" and device_kind == "cuda":
            cells.append(MatrixCell(name, runtime, precision, "n/a", detail="OpenVINO does not run on NVIDIA GPUs"))
            continue
        rt_device = "cpu" if runtime == "openvino" else device
        try:
            if runtime == "torch":
                if torch_model is None:
                    torch_model = entry.torch_model()
                target: Any = torch_model
                load_precision = precision
            elif runtime == "onnxruntime" and precision is Precision.FP16:
                target = _fp16_model(path, work_dir / f"{name}-fp16.onnx")
                load_precision = Precision.FP32  # ORT runs what the graph stores
            elif runtime == "onnxruntime" and precision is not Precision.FP32:
                cells.append(MatrixCell(name, runtime, precision, "n/a", detail="ORT runs the precision stored in the graph"))
                continue
            else:
                target, load_precision = path, precision
            rt = load_runtime(target, runtime, device=rt_device, precision=load_precision, intra_op_threads=threads)
        except BackendUnavailableError as exc:  # not installed / no such device here: not a failure
            cells.append(MatrixCell(name, runtime, precision, "n/a", detail=str(exc)[:300]))
            continue
        except Exception as exc:
            cells.append(MatrixCell(name, runtime, precision, "load_error", detail=_short(exc, path),
                                    seconds=time.perf_counter() - t0))
            continue
        try:
            with rt:
                ran_as = "float16 graph" if runtime == "onnxruntime" and precision is Precision.FP16 else rt.info.precision
                outputs = rt.run(feeds)
        except Exception as exc:
            cells.append(MatrixCell(name, runtime, precision, "run_error", ran_as=ran_as, detail=_short(exc, path),
                                    seconds=time.perf_counter() - t0))
            continue
        cosine, note = compare_to_reference(reference, outputs)
        status = "match" if cosine >= MIN_COSINE else "mismatch"
        cells.append(MatrixCell(name, runtime, precision, status, round(cosine, 6), ran_as, note,
                                time.perf_counter() - t0))
    return cells


def _short(exc: BaseException, path: Path) -> str:
    """The error's first line, with the cache path shortened to the file name."""
    return _first_line(exc).replace(str(path), path.name)


# ---------------------------------------------------------------------------------------------
# tasks


def _work_dir(ctx: EvalContext, name: str) -> Path:
    base = Path(ctx.work_dir)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


@task("EV-8.operators", clause=CLAUSE, title="ONNX operator conformance per backend (onnx node tests)",
      est_s={"quick": 35, "standard": 120, "full": 240})
def measure_operator_conformance(ctx: EvalContext) -> list[Item]:
    """ONNX node-test conformance of onnxruntime and openvino, per opset."""
    from zhisuan.runtime import backend_status

    statuses = {s.name: s for s in backend_status()}
    count = ctx.pick(quick=300, standard=900, full=None)
    ctx.progress("collecting onnx's node test cases (once per onnx version)", done=0, total=1)
    store = case_store()
    infos = {c.name: c for c in read_index(store)}
    chosen = select_cases(list(infos), count, ctx.seed)
    device = f"cuda:{ctx.device.index}" if getattr(ctx.device, "kind", "cpu") == "cuda" else "cpu"
    items: list[Item] = []
    sweeps = []
    for backend in SWEEP_BACKENDS:
        status = statuses.get(backend)
        name = f"ONNX operator conformance, {backend}"
        if status is None or not status.available:
            items.append(Item.skipped(f"EV-8.onnx.{backend}", CLAUSE, name, unit="%",
                                      reason=f"{backend} is not available: {getattr(status, 'reason', 'unknown')}"))
            continue
        if device != "cpu" and backend == "openvino":
            items.append(Item.skipped(f"EV-8.onnx.{backend}", CLAUSE, name, unit="%",
                                      reason="OpenVINO does not run on NVIDIA GPUs"))
            continue
        if device != "cpu" and "cuda" not in status.devices:
            items.append(Item.skipped(f"EV-8.onnx.{backend}", CLAUSE, name, unit="%",
                                      reason=f"this {backend} build has no CUDA execution provider"))
            continue
        sweeps.append(BackendSweep(backend, store, chosen, _work_dir(ctx, f"ev8-{backend}"), device=device))
    t0 = time.monotonic()
    run_sweeps(sweeps, progress=ctx.progress,
               total_timeout_s=ctx.pick(quick=240, standard=900, full=3600))
    seconds = time.monotonic() - t0
    import onnx

    random_n = sum(is_random(infos[name]) for name in chosen)
    sample_text = (f"a seeded sample (seed {ctx.seed}) of {len(chosen)} of the {len(infos)}"
                   if len(chosen) < len(infos) else f"all {len(infos)}")
    for sweep in sweeps:
        summary = summarize_sweep(sweep.backend, statuses[sweep.backend].version, infos, sweep.results,
                                  sweep.restarts, seconds)
        shutil.rmtree(sweep.work_dir, ignore_errors=True)
        table = {"columns": ["opset", "cases", "pass", "pass rate %"],
                 "rows": [[k, v["cases"], v["pass"], round(100.0 * v["pass"] / v["cases"], 1)]
                          for k, v in summary.per_opset.items()]}
        opsets = [k for k in summary.per_opset if k.isdigit()]
        details = {
            "summary": summary.to_dict(), "table": table, "onnx_version": onnx.__version__,
            "series": {"x": [int(k) for k in opsets],
                       "y": [100.0 * summary.per_opset[k]["pass"] / summary.per_opset[k]["cases"] for k in opsets],
                       "x_label": "opset of the test model", "y_label": "pass rate %", "kind": "bar"},
        }
        counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
        method = (f"{sample_text} node test cases shipped in onnx {onnx.__version__} "
                  f"(onnx.backend.test.case.node), each loaded and run in a child process on {sweep.backend} "
                  f"({'CPU EP' if sweep.backend == 'onnxruntime' and device == 'cpu' else device}, 1 thread"
                  + (", INFERENCE_PRECISION_HINT=f32" if sweep.backend == "openvino" else "")
                  + "), outputs compared as onnx's backend test runner does (count, shape, dtype, "
                  f"assert_allclose with each case's rtol/atol, default 1e-3/1e-7; {random_n} case(s) of random "
                  f"operators by count, shape and dtype only); outcome: {counts}")
        items.append(Item.measured(
            f"EV-8.onnx.{sweep.backend}", CLAUSE, f"ONNX operator conformance, {sweep.backend}",
            value=100.0 * summary.pass_rate, unit="%", method=method, repeats=1, details=details))
    ctx.progress("done", done=1, total=1)
    return items


@task("EV-8.zoo", clause=CLAUSE, title="Zoo models x runtime x precision",
      est_s={"quick": 30, "standard": 60, "full": 240})
def measure_zoo_matrix(ctx: EvalContext) -> list[Item]:
    """Which zoo models load, run and match ONNX Runtime FP32 per runtime and precision."""

    kind = getattr(ctx.device, "kind", "cpu")
    device = f"cuda:{ctx.device.index}" if kind == "cuda" else "cpu"
    names = zoo_matrix_models(quick=ctx.is_quick)
    work = _work_dir(ctx, "ev8-zoo")
    items: list[Item] = []
    all_cells: list[MatrixCell] = []
    try:
        for i, name in enumerate(names):
            ctx.progress(f"{name}: every runtime and precision", done=i, total=len(names))
            try:
                cells = run_matrix_model(name, device=device, device_kind=kind, threads=ctx.threads,
                                         seed=ctx.seed, work_dir=work)
            except UserError as exc:
                items.append(Item.failed(f"EV-8.zoo.{name}", CLAUSE, f"{name}: runtimes x precisions",
                                         reason=f"the ONNX Runtime FP32 reference could not run: {exc}", unit="%"))
                continue
            all_cells += cells
            items.append(_model_item(name, cells, device))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.progress("frameworks", done=len(names), total=len(names))
    if all_cells:
        applicable = [c for c in all_cells if c.applicable]
        ok = sum(c.status == "match" for c in applicable)
        items.append(Item.measured(
            "EV-8.zoo.matrix", CLAUSE, "Zoo model x runtime x precision combinations that run and match",
            value=100.0 * ok / len(applicable) if applicable else 0.0, unit="%", repeats=1,
            method=_MATRIX_METHOD.format(device=device, min_cosine=MIN_COSINE),
            details={"table": _cell_table(all_cells), "matched": ok, "applicable": len(applicable)}))
    rows = framework_table()
    present = [r for r in rows if r["version"]]
    items.append(Item.measured(
        "EV-8.frameworks", CLAUSE, "Frameworks present", value=len(present), unit="frameworks", repeats=1,
        method="importlib.metadata versions of the frameworks zhisuan can use; runtime backends also "
               "report the devices they reach (zhisuan.runtime.backend_status)",
        details={"table": {"columns": ["framework", "version", "available", "devices"],
                           "rows": [[r["framework"], r["version"] or "not installed", r.get("available", ""),
                                     ", ".join(r.get("devices", []))] for r in rows]},
                 "frameworks": rows}))
    return items


_MATRIX_METHOD = (
    "each model loaded with zhisuan.runtime on every runtime x precision (onnxruntime fp32, fp16 = "
    "the graph converted by onnxruntime.transformers.float16 with float32 inputs/outputs; openvino "
    "with INFERENCE_PRECISION_HINT fp32/bf16/fp16; torch fp32/bf16/fp16 for models with a PyTorch "
    "module) on {device}, run on one seeded input batch; passes when every float output has cosine "
    ">= {min_cosine} with ONNX Runtime FP32 and integer outputs are equal; 'ran as' is the precision "
    "the backend reports after loading"
)


def _cell_table(cells: Sequence[MatrixCell]) -> dict[str, Any]:
    return {"columns": ["model", "runtime", "precision", "status", "min cosine", "ran as", "detail"],
            "rows": [[c.model, c.runtime, c.precision, c.status, c.min_cosine, c.ran_as, c.detail] for c in cells]}


def _model_item(name: str, cells: Sequence[MatrixCell], device: str) -> Item:
    """One model's row of the matrix. The value is the share of applicable combinations that match
    ONNX Runtime FP32 (coverage, like the operator pass rates); the item fails only when a
    combination *runs and answers wrong* (a mismatch: silently wrong results are a defect). A
    combination that a runtime refuses to load or run is a gap in coverage, named in ``reason``
    and the table, not a failure of the device."""
    applicable = [c for c in cells if c.applicable]
    ok = [c for c in applicable if c.status == "match"]
    bad = [c for c in applicable if c.status != "match"]
    value = 100.0 * len(ok) / len(applicable) if applicable else 0.0
    details = {"table": _cell_table(cells), "cells": [c.to_dict() for c in cells]}
    method = _MATRIX_METHOD.format(device=device, min_cosine=MIN_COSINE)
    title = f"{name}: runtimes x precisions that run and match ORT FP32"
    if not bad:
        return Item.measured(f"EV-8.zoo.{name}", CLAUSE, title, value=value, unit="%", method=method, repeats=1,
                             details=details)
    reason = "; ".join(f"{c.runtime} {c.precision}: {c.status}"
                       + (f" (cosine {c.min_cosine})" if c.min_cosine is not None else f" ({c.detail[:160]})")
                       for c in bad)
    wrong = any(c.status == "mismatch" for c in bad)
    if not wrong:
        reason = f"not supported here (coverage, not a defect): {reason}"
    return Item.measured(f"EV-8.zoo.{name}", CLAUSE, title, value=value, unit="%", method=method, repeats=1,
                         status="fail" if wrong else "pass", reason=reason, details=details)


__all__ = [
    "CASE_STATUSES",
    "BackendSweep",
    "CaseInfo",
    "CaseResult",
    "ConformanceSummary",
    "MatrixCell",
    "case_store",
    "compare_outputs",
    "framework_table",
    "is_random",
    "load_case",
    "read_index",
    "run_case",
    "run_matrix_model",
    "run_sweeps",
    "select_cases",
    "summarize_sweep",
    "write_cases",
    "zoo_feeds",
    "zoo_matrix_models",
]

