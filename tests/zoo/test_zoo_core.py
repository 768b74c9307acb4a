"""The zoo's registry, cache and evaluation driver, on a tiny entry built in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zhisuan import zoo
from zhisuan.errors import UserError
from zhisuan.zoo.base import BuildOptions, EvalOptions, EvalResult, ZooEntry


def _write_scale_model(path: Path, scale: float) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _evaluate(rt, options: EvalOptions) -> EvalResult:
    n = options.samples or 8
    x = np.random.default_rng(options.seed).standard_normal((n, 4)).astype(np.float32)
    y = rt.run({rt.inputs()[0].name: x})[rt.outputs()[0].name]
    # fraction of rows the model doubles exactly: the "task" of this toy entry
    value = float(np.mean(np.all(np.isclose(y, 2 * x), axis=1)))
    return EvalResult(model="toy", metric="doubling_accuracy", value=value, samples=n)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    builds = {"count": 0}

    def build(out: Path, options: BuildOptions, progress) -> None:
        builds["count"] += 1
        progress("building toy")
        _write_scale_model(out, 2.0)

    entry = ZooEntry(
        name="toy", task="test", summary="doubles its input", kind="random-init", license="MIT",
        weights=None, preprocess="none", postprocess="none", metric="doubling_accuracy",
        metric_description="rows doubled exactly", eval_set="seeded normal rows", default_eval_samples=8,
        build=build, evaluate=_evaluate,
    )
    monkeypatch.setattr(zoo, "_registry", lambda: {"toy": entry})
    monkeypatch.setenv("ZHISUAN_CACHE_DIR", str(tmp_path / "cache"))
    return builds


def test_export_builds_once_and_reuses_verified_cache(toy: dict[str, int], tmp_path: Path) -> None:
    first = zoo.export("toy")
    second = zoo.export("toy")
    assert toy["count"] == 1
    assert not first.cached and second.cached
    assert first.sha256 == second.sha256 and first.path == second.path
    manifest = (first.path.parent / "manifest.json").read_text()
    assert first.sha256 in manifest


def test_tampered_cache_file_is_rebuilt(toy: dict[str, int]) -> None:
    path = zoo.export("toy").path
    path.write_bytes(path.read_bytes() + b"\0")
    messages: list[str] = []
    result = zoo.export("toy", progress=messages.append)
    assert toy["count"] == 2
    assert not result.cached
    assert any("does not match" in m for m in messages)


def test_export_copies_to_out_and_keys_cache_by_opset(toy: dict[str, int], tmp_path: Path) -> None:
    out = zoo.export("toy", out=tmp_path / "copy.onnx")
    assert out.path == tmp_path / "copy.onnx"
    assert out.path.read_bytes() == zoo.export("toy").path.read_bytes()
    zoo.export("toy", opset=18)
    assert toy["count"] == 2  # a different opset is a different cache entry


def test_evaluate_scores_cached_and_modified_models(toy: dict[str, int], tmp_path: Path) -> None:
    result = zoo.evaluate("toy", samples=5)
    assert (result.metric, result.value, result.samples) == ("doubling_accuracy", 1.0, 5)
    assert result.runtime["runtime"] == "onnxruntime"
    modified = tmp_path / "tripled.onnx"
    _write_scale_model(modified, 3.0)
    assert zoo.evaluate("toy", model=modified, samples=5).value == 0.0
    assert set(result.to_dict()) >= {"metric", "value", "samples"}


def test_evaluate_errors_are_user_errors(toy: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        zoo.evaluate("toy", model=tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="unknown zoo model"):
        zoo.evaluate("nope")
    with pytest.raises(UserError, match="no PyTorch reference"):
        zoo.evaluate("toy", runtime="torch")
    with pytest.raises(UserError, match="samples"):
        zoo.evaluate("toy", samples=0)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match="could not load"):
        zoo.evaluate("toy", model=garbage)


def test_signature_reads_the_built_model(toy: dict[str, int]) -> None:
    sig = zoo.signature("toy")
    assert sig["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["n", 4]}]
    assert sig["outputs"][0]["name"] == "y"
