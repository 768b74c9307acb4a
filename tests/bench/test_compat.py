"""EV-8 compatibility: onnx node test cases on ONNX Runtime, planted failures, the crash-guarded sweep,
the zoo matrix."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from zhisuan.bench import compat
from zhisuan.progress import no_progress

# A handful of the node test cases that ship in the onnx wheel (importing a case module registers
# its cases; collect_testcases() would run all ~1,880 generators).
NODE_MODULES = ("relu", "abs", "add", "reshape", "softmax")


@pytest.fixture(scope="module")
def node_cases() -> list[Any]:
    try:
        import onnx.backend.test.case.node as node_pkg

        for name in NODE_MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{name}")
        registered = list(node_pkg._NodeTestCases)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"onnx's node test cases are not importable this way: {exc}")
    wanted = {"test_relu", "test_abs", "test_add", "test_add_bcast", "test_reshape_reordered_all_dims",
              "test_softmax_axis_0", "test_relu_expanded_ver18"}
    cases = [c for c in registered if c.name in wanted]
    assert len(cases) >= 5
    return cases


@pytest.fixture(scope="module")
def store(node_cases: list[Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cases")
    compat.write_cases(node_cases, out)
    return out


def _ort(model_bytes: bytes) -> compat.Prepared:
    return compat.prepare_onnxruntime(model_bytes, threads=1)


def test_store_round_trips_models_and_data(store: Path, node_cases: list[Any]) -> None:
    infos = {c.name: c for c in compat.read_index(store)}
    assert infos["test_relu"].op == "Relu" and infos["test_relu"].opset is not None
    assert infos["test_relu_expanded_ver18"].op == "Relu"  # an expanded function is credited to its op
    original = next(c for c in node_cases if c.name == "test_add_bcast")
    model_bytes, sets = compat.load_case(store, "test_add_bcast")
    assert model_bytes == original.model.SerializeToString()
    for (inputs, outputs), (ref_in, ref_out) in zip(sets, original.data_sets, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(inputs, ref_in, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(outputs, ref_out, strict=True))


def test_real_node_cases_pass_on_onnxruntime(store: Path) -> None:
    for info in compat.read_index(store):
        model_bytes, sets = compat.load_case(store, info.name)
        result = compat.run_case(_ort, info.name, model_bytes, sets, rtol=info.rtol, atol=info.atol)
        assert result.status == "pass", (info.name, result.detail)


def test_planted_wrong_expected_output_is_a_wrong_result(store: Path) -> None:
    info = next(c for c in compat.read_index(store) if c.name == "test_relu")
    model_bytes, sets = compat.load_case(store, "test_relu")
    (inputs, outputs), = sets
    planted = [(inputs, [outputs[0] + 0.5])]  # a deliberately wrong expectation
    result = compat.run_case(_ort, "test_relu", model_bytes, planted, rtol=info.rtol, atol=info.atol)
    assert result.status == "wrong_result" and "Mismatched elements" in result.detail


def test_unsupported_op_and_run_time_error_are_classified() -> None:
    unknown = helper.make_model(helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="zhisuan.test")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("zhisuan.test", 1)])
    x = np.ones(2, np.float32)
    result = compat.run_case(_ort, "unknown", unknown.SerializeToString(), [([x], [x])], rtol=1e-3, atol=1e-7)
    assert result.status == "not_supported"
    from zhisuan.bench.reliability import failing_onnx_model

    data = [([np.arange(4, dtype=np.float32), np.array([3, 3], np.int64)], [np.zeros((3, 3), np.float32)])]
    result = compat.run_case(_ort, "reshape", failing_onnx_model(), data, rtol=1e-3, atol=1e-7)
    assert result.status == "run_error" and "Reshape" in result.detail


def test_compare_outputs_follows_the_onnx_runner() -> None:
    f = np.array([1.0, 2.0], np.float32)
    assert compat.compare_outputs([f], [f * (1 + 1e-5)], rtol=1e-3, atol=1e-7) is None
    assert "shape" in compat.compare_outputs([f], [f[:1]], rtol=1e-3, atol=1e-7)
    assert "dtype" in compat.compare_outputs([f], [f.astype(np.float64)], rtol=1e-3, atol=1e-7)
    assert "outputs" in compat.compare_outputs([f, f], [f], rtol=1e-3, atol=1e-7)
    assert compat.compare_outputs([[f, f]], [[f, f]], rtol=1e-3, atol=1e-7) is None  # sequences
    assert compat.compare_outputs([[f]], [f], rtol=1e-3, atol=1e-7) is not None
    words = np.array(["a", "b"], dtype=object)
    assert compat.compare_outputs([words], [words.copy()], rtol=0, atol=0) is None
    assert "strings" in compat.compare_outputs([words], [np.array(["a", "c"], dtype=object)], rtol=0, atol=0)


def test_bfloat16_round_trips_through_onnxruntime() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3])]), opset_imports=[helper.make_opsetid("", 21)])
    x = np.array([0.5, 1.25, -3.0], np.float32)
    expected = x.astype(ml_dtypes.bfloat16)
    result = compat.run_case(_ort, "cast", model.SerializeToString(), [([x], [expected])], rtol=1e-3, atol=1e-7)
    assert result.status == "pass", result.detail


_FAKE_WORKER = r"""
import json, os, signal, sys, time
spec = json.loads(sys.argv[1])
with open(spec["results"], "a") as out:
    for name in spec["cases"]:
        out.write(json.dumps({"start": name}) + "\n"); out.flush()
        if name == "boom":
            os.kill(os.getpid(), signal.SIGSEGV)
        if name == "hang":
            time.sleep(60)
        out.write(json.dumps({"case": name, "status": "pass", "detail": "", "seconds": 0.0}) + "\n"); out.flush()
"""


def test_sweep_survives_a_crash_and_a_hang(tmp_path: Path) -> None:
    cases = ["a", "boom", "b", "hang", "c"]
    sweep = compat.BackendSweep("fake", tmp_path, cases, tmp_path, case_timeout_s=1.0,
                                command=[sys.executable, "-c", _FAKE_WORKER])
    compat.run_sweeps([sweep], total_timeout_s=60)
    statuses = {name: r.status for name, r in sweep.results.items()}
    assert statuses == {"a": "pass", "boom": "crash", "b": "pass", "hang": "crash", "c": "pass"}
    assert "SIGSEGV" in sweep.results["boom"].detail
    assert "no result within" in sweep.results["hang"].detail
    assert sweep.restarts == 2 and sweep._proc is None


def test_sweep_worker_runs_real_cases_in_a_child(store: Path, tmp_path: Path) -> None:
    names = [c.name for c in compat.read_index(store)]
    sweep = compat.BackendSweep("onnxruntime", store, names, tmp_path)
    compat.run_sweeps([sweep], total_timeout_s=120)
    assert {r.status for r in sweep.results.values()} == {"pass"}
    summary = compat.summarize_sweep("onnxruntime", "x", {c.name: c for c in compat.read_index(store)},
                                     sweep.results, sweep.restarts, 1.0)
    assert summary.pass_rate == 1.0 and summary.counts["pass"] == len(names)
    assert sum(v["cases"] for v in summary.per_opset.values()) == len(names)


def test_summary_groups_failures_per_opset() -> None:
    infos = {n: compat.CaseInfo(n, op, opset, 1e-3, 1e-7, 1) for n, op, opset in
             [("t1", "Relu", 13), ("t2", "Relu", 14), ("t3", "Abs", 13), ("t4", "Foo", None)]}
    results = {"t1": compat.CaseResult("t1", "pass"), "t2": compat.CaseResult("t2", "wrong_result", "x"),
               "t3": compat.CaseResult("t3", "crash", "signal"), "t4": compat.CaseResult("t4", "not_supported")}
    s = compat.summarize_sweep("b", None, infos, results, 1, 2.0)
    assert s.pass_rate == 0.25
    assert s.per_opset == {"13": {"cases": 2, "pass": 1}, "14": {"cases": 1, "pass": 0},
                           "other domain": {"cases": 1, "pass": 0}}
    assert s.failed_ops == {"wrong_result": ["Relu"], "crash": ["Abs"], "not_supported": ["Foo"]}
    json.dumps(s.to_dict())


def test_select_cases_is_a_seeded_sample() -> None:
    names = [f"c{i}" for i in range(100)]
    a = compat.select_cases(names, 10, 0)
    assert a == compat.select_cases(list(reversed(names)), 10, 0) and len(a) == 10 and a == sorted(a)
    assert a != compat.select_cases(names, 10, 1)
    assert compat.select_cases(names, None, 0) == sorted(names)


def test_zoo_matrix_cells(tmp_path: Path) -> None:
    combos = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "bf16"), ("torch", "fp32")]
    cells = {(c.runtime, c.precision): c for c in compat.run_matrix_model(
        "ppocr-cls", device="cpu", device_kind="cpu", threads=1, seed=0, work_dir=tmp_path, combos=combos)}
    assert cells["onnxruntime", "fp32"].status == "match" and cells["onnxruntime", "fp32"].min_cosine == 1.0
    assert cells["openvino", "fp32"].status == "match" and cells["openvino", "fp32"].ran_as == "f32"
    assert cells["onnxruntime", "bf16"].status == "n/a" and cells["torch", "fp32"].status == "n/a"


def test_compare_to_reference_detects_a_planted_mismatch() -> None:
    ref = {"y": np.linspace(-1, 1, 50, dtype=np.float32), "k": np.arange(3)}
    assert compat.compare_to_reference(ref, dict(ref))[0] == 1.0
    noisy = {"y": ref["y"][::-1].copy(), "k": ref["k"]}
    assert compat.compare_to_reference(ref, noisy)[0] < compat.MIN_COSINE
    assert compat.compare_to_reference(ref, {"y": ref["y"], "k": ref["k"] + 1})[0] == 0.0
    assert compat.compare_to_reference(ref, {"y": ref["y"]})[0] == 0.0


def test_zoo_feeds_are_valid_for_special_inputs() -> None:
    feeds = compat.zoo_feeds("silero-vad", [], 0)
    assert feeds["sr"].item() == 16000 and feeds["state"].shape[0] == 2 and feeds["state"].shape[2] == 128
    assert feeds["input"].shape[-1] == 576 and np.abs(feeds["input"]).max() <= 1.0


def test_the_quick_matrix_takes_the_entries_marked_quick() -> None:
    from zhisuan import zoo

    quick = compat.zoo_matrix_models(quick=True)
    assert quick == ["efficientnet-lite0", "minilm-l6", "ppocr-cls", "silero-vad"]
    assert compat.zoo_matrix_models(quick=False) == zoo.names()


def test_framework_table_lists_versions() -> None:
    rows = {r["framework"]: r for r in compat.framework_table()}
    assert rows["onnx"]["version"] and rows["onnxruntime"]["available"] is True
    assert rows["tensorrt"]["version"] is None or rows["tensorrt"]["version"]


def test_model_item_fails_with_the_failing_cells() -> None:
    cells = [compat.MatrixCell("m", "onnxruntime", "fp32", "match", 1.0),
             compat.MatrixCell("m", "openvino", "bf16", "mismatch", 0.9),
             compat.MatrixCell("m", "torch", "fp32", "n/a")]
    item = compat._model_item("m", cells, "cpu")
    assert item.status == "fail" and item.value == 50.0 and "openvino bf16: mismatch (cosine 0.9)" in item.reason
    assert len(item.details["table"]["rows"]) == 3


def test_a_model_a_runtime_cannot_load_is_a_coverage_gap_not_a_failure() -> None:
    cells = [compat.MatrixCell("m", "onnxruntime", "fp32", "match", 1.0),
             compat.MatrixCell("m", "openvino", "fp32", "load_error", None, detail="Conversion is failed for: Conv-16"),
             compat.MatrixCell("m", "torch", "fp32", "run_error", None, detail="dtype")]
    item = compat._model_item("m", cells, "cpu")
    assert item.status == "pass" and item.value == pytest.approx(100 / 3)
    assert item.reason.startswith("not supported here") and "openvino fp32: load_error (Conversion is failed" in item.reason


def test_operator_task_on_a_small_store(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "case_store", lambda **kw: store)
    monkeypatch.setattr(compat, "SWEEP_BACKENDS", ("onnxruntime",))
    ctx = SimpleNamespace(suite="quick", device=SimpleNamespace(kind="cpu", index=0, id="cpu:0"), seed=0,
                          work_dir=tmp_path, threads=1, progress=no_progress,
                          pick=lambda quick, standard, full: quick)
    items = compat.measure_operator_conformance(ctx)
    assert [i.id for i in items] == ["EV-8.onnx.onnxruntime"]
    assert items[0].value == 100.0 and items[0].details["table"]["rows"]


def test_random_operators_are_compared_by_structure_only() -> None:
    drawn = np.array([1.0, 0.0, 1.0], np.float32)
    other = np.array([0.0, 1.0, 1.0], np.float32)
    assert compat.compare_outputs([drawn], [other], rtol=1e-3, atol=1e-7) is not None
    assert compat.compare_outputs([drawn], [other], rtol=1e-3, atol=1e-7, values=False) is None
    assert compat.compare_outputs([drawn], [other[:2]], rtol=1e-3, atol=1e-7, values=False) is not None
    info = compat.CaseInfo
    assert compat.is_random(info("test_bernoulli_seed_expanded", "Bernoulli", 22, 1e-3, 1e-7, 1))
    assert compat.is_random(info("test_training_dropout_mask", "Dropout", 22, 1e-3, 1e-7, 1))
    assert not compat.is_random(info("test_training_dropout_zero_ratio", "Dropout", 22, 1e-3, 1e-7, 1))
    assert not compat.is_random(info("test_dropout_default", "Dropout", 22, 1e-3, 1e-7, 1))
