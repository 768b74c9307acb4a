"""A new zoo entry, defined in this one file, is picked up by every consumer with no other edit:
calibration (quantize), the LoadGen accuracy pass (bench), the evaluation suite's EV-5 task,
compatibility, pack and serve."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from zhisuan import zoo
from zhisuan.zoo import EvalOptions, EvalResult, ZooEntry
from zhisuan.zoo.base import BuildOptions, ScoredSamples, ServingDefaults, SuiteRun

NAME = "test-tiny-classifier"
WEIGHT = np.array([[2.0, -1.0, 0.0], [0.0, 1.5, -1.0], [-1.0, 0.0, 2.0], [0.5, 0.5, 0.5]], np.float32)
LABELS = ("left", "middle", "right")
ORDER = 4  # rows per realistic feed


def _build(out: Path, options: BuildOptions, progress: object) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHT, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out))


def _rows(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).uniform(0, 1, (count, 4)).astype(np.float32)
    return x, (x @ WEIGHT).argmax(-1)


def _inputs(split: str, batches: int, seed: int) -> list[dict[str, np.ndarray]]:
    x, _ = _rows(batches * ORDER, seed if split == "calib" else 0)
    return [{"x": x[i : i + ORDER]} for i in range(0, len(x), ORDER)]


def _samples(specs: Sequence[object]) -> ScoredSamples:
    x, labels = _rows(24, 0)

    def score(outputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[float, dict[str, float]]:
        predicted = np.array([int(np.asarray(o["logits"]).reshape(-1).argmax()) for o in outputs])
        return float(np.mean(predicted == labels)), {}

    return ScoredSamples(tuple({"x": x[i : i + 1]} for i in range(len(x))), "24 seeded rows", "accuracy", True, score)


def _evaluate(rt: object, options: EvalOptions) -> EvalResult:
    x, labels = _rows(options.samples or 24, options.seed)
    logits = rt.run({"x": x})["logits"]  # type: ignore[attr-defined]
    return EvalResult(NAME, "accuracy", float(np.mean(logits.argmax(-1) == labels)), len(x))


def _serving(model_inputs: Sequence[object], model_outputs: Sequence[object]) -> ServingDefaults:
    return ServingDefaults(postprocess=(
        {"op": "argmax", "output": "logits", "axis": -1, "as": "class"},
        {"op": "labels", "output": "class", "labels": list(LABELS), "as": "label"},
    ))


ENTRY = ZooEntry(
    name=NAME, task="classification", summary="a 4 -> 3 linear classifier built in the test", kind="random-init",
    license="-", weights=None, preprocess="x: float32 [batch, 4] in [0, 1]", postprocess="argmax of the logits",
    metric="accuracy", metric_description="argmax equals the label", eval_set="24 seeded rows",
    default_eval_samples=24, build=_build, evaluate=_evaluate, inputs=_inputs, samples=_samples,
    serving=_serving, quick=True, suite_runs=(SuiteRun("onnxruntime", ("quick",), {"quick": 20}),),
)


@pytest.fixture(scope="module")
def registered() -> Iterator[ZooEntry]:
    zoo.register(ENTRY)
    try:
        yield ENTRY
    finally:
        zoo.unregister(NAME)


def test_it_is_listed_and_evaluated(registered: ZooEntry) -> None:
    assert NAME in zoo.names()
    assert zoo.evaluate(NAME).value == 1.0
    assert zoo.get(NAME).to_dict()["hooks"] == {"inputs": True, "samples": True, "serving": True}


def test_calibration_uses_its_realistic_inputs(registered: ZooEntry, tmp_path: Path) -> None:
    from zhisuan.quantize import QuantizeConfig, quantize_model

    result = quantize_model(NAME, tmp_path / "int8.onnx", config=QuantizeConfig(mode="int8"), measure_latency=False)
    assert result.calibration is not None
    assert result.calibration.source == f"zoo:{NAME}" and result.calibration.warning is None
    assert result.calibration.samples == 8 * ORDER


def test_the_loadgen_accuracy_pass_scores_its_samples(registered: ZooEntry) -> None:
    from zhisuan.bench.inference import bench_model

    result = bench_model(NAME, scenario="offline", duration_s=0.5, accuracy=True)
    assert result.accuracy is not None
    assert result.accuracy["metric"] == "accuracy" and result.accuracy["samples"] == 24
    assert result.accuracy["value"] == 1.0 and result.accuracy["passed"]


def test_pack_and_serve_apply_its_serving_defaults(registered: ZooEntry, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from zhisuan.serve.config import ServerConfig
    from zhisuan.serve.repository import Repository
    from zhisuan.serve.server import create_app

    package = Repository(tmp_path / "repo").add(NAME, name="tiny")
    assert package.manifest.metadata["zoo"]["defaults_applied"] == ["postprocess"]
    assert [s["op"] for s in package.manifest.postprocess] == ["argmax", "labels"]
    x, labels = _rows(3, 7)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.reshape(-1).tolist()}]}
    with TestClient(create_app(ServerConfig(repo=tmp_path / "repo", telemetry=False))) as client:
        reply = client.post("/v2/models/tiny/infer", json=body)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["label"]["data"] == [LABELS[i] for i in labels]


def test_the_compatibility_matrix_runs_it(registered: ZooEntry, tmp_path: Path) -> None:
    from zhisuan.bench import compat

    assert NAME in compat.zoo_matrix_models(quick=True)
    feeds = compat.zoo_feeds(NAME, [], seed=3)
    assert feeds["x"].shape == (ORDER, 4)  # its realistic calib feed, not a random guess
    cells = compat.run_matrix_model(NAME, device="cpu", device_kind="cpu", threads=1, seed=3, work_dir=tmp_path,
                                    combos=[("onnxruntime", "fp32"), ("torch", "fp32")])
    assert [(c.runtime, c.status) for c in cells] == [("onnxruntime", "match"), ("torch", "n/a")]


def test_the_evaluation_suite_gets_its_ev5_task(registered: ZooEntry, tmp_path: Path) -> None:
    from zhisuan.bench.tasks import EvalContext, registered_tasks
    from zhisuan.device import list_devices

    tasks = registered_tasks()
    ev5 = tasks[f"EV-5.{NAME}"]
    assert [str(s) for s in ev5.suites] == ["quick"] and ev5.est_s == {"quick": 20}
    cpu = next(d for d in list_devices(backends=False).devices if d.kind == "cpu")
    items = ev5.run(EvalContext(suite="quick", device=cpu, threads=1, work_dir=tmp_path))
    accuracy = [i for i in items if i.id.endswith("accuracy")]
    assert accuracy and accuracy[0].status == "pass" and accuracy[0].value == 1.0


def test_an_unregistered_entry_leaves_no_task_behind() -> None:
    from dataclasses import replace

    from zhisuan.bench.tasks import registered_tasks

    zoo.register(replace(ENTRY, name="test-tiny-other"))
    try:
        assert "EV-5.test-tiny-other" in registered_tasks()
    finally:
        zoo.unregister("test-tiny-other")
    assert "EV-5.test-tiny-other" not in registered_tasks()
    assert "EV-5.efficientnet-lite0" in registered_tasks()
