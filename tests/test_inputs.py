from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zhisuan.compare.metrics import agreement, cosine_similarity, top1_agreement
from zhisuan.errors import UserError
from zhisuan.inputs import resolve_model, sample_inputs


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_resolve_model(model_path: Path) -> None:
    assert resolve_model(model_path) == model_path
    with pytest.raises(UserError, match="not found"):
        resolve_model(model_path.with_name("nope.onnx"))
    with pytest.raises(UserError, match="neither a file nor a zoo model"):
        resolve_model("no-such-zoo-model")


def test_sample_inputs_random_and_npz(model_path: Path, tmp_path: Path) -> None:
    feeds = sample_inputs(model_path, random=3, batch=2)
    assert len(feeds) == 3 and feeds[0]["x"].shape == (2, 3) and feeds[0]["x"].dtype == np.float32
    assert not np.array_equal(feeds[0]["x"], feeds[1]["x"])  # each batch has its own seed
    np.savez(tmp_path / "a.npz", x=np.ones((4, 3), np.float32))
    loaded = sample_inputs(model_path, data=tmp_path / "a.npz")
    assert loaded[0]["x"].shape == (4, 3)
    np.savez(tmp_path / "bad.npz", z=np.ones((4, 3), np.float32))
    with pytest.raises(UserError, match="missing"):
        sample_inputs(model_path, data=tmp_path / "bad.npz")
    with pytest.raises(UserError, match="not both"):
        sample_inputs(model_path, data=tmp_path / "a.npz", random=2)


def _entry(name: str, inputs) -> Any:
    from zhisuan.zoo import ZooEntry

    return ZooEntry(name=name, task="test", summary="test", kind="random-init", license="-", weights=None,
                    preprocess="-", postprocess="-", metric="m", metric_description="-", eval_set="-",
                    default_eval_samples=1, build=lambda *a: None, evaluate=lambda *a: None, inputs=inputs)


def test_a_zoo_model_is_verified_on_its_realistic_inputs(model_path: Path) -> None:
    from zhisuan import zoo
    from zhisuan.inputs import METRIC_SEED

    calls = []

    def known_inputs(split, batches, seed):
        calls.append((split, batches, seed))
        return [{"x": np.full((1, 3), 7.0, np.float32)}] * batches

    zoo.register(_entry("test-known", known_inputs))
    zoo.register(_entry("test-missing", lambda split, batches, seed: None))  # its data is not installed
    try:
        assert sample_inputs(model_path, zoo_name="test-known")[0]["x"][0, 0] == 7.0
        assert calls == [("calib", 1, METRIC_SEED)]
        assert sample_inputs(model_path, zoo_name="test-missing")[0]["x"].dtype == np.float32  # random fallback
        assert sample_inputs(model_path, random=2, zoo_name="test-known")[0]["x"][0, 0] != 7.0  # --random wins
    finally:
        zoo.unregister("test-known")
        zoo.unregister("test-missing")


def test_input_source_labels_where_feeds_came_from(model_path: Path) -> None:
    from zhisuan import zoo
    from zhisuan.inputs import input_source

    zoo.register(_entry("test-missing", lambda split, batches, seed: None))
    try:
        made = input_source("test-missing", count=3).make(model_path)
        assert (made.label, made.realistic, len(made.feeds)) == ("random", False, 3)
    finally:
        zoo.unregister("test-missing")
    assert input_source(None, random=2).make(model_path).label == "random"
    np.savez(model_path.parent / "in.npz", x=np.ones((2, 3), np.float32))
    made = input_source(None, data=model_path.parent / "in.npz").make(model_path)
    assert made.realistic and made.label.startswith("npz:") and made.feeds[0]["x"].shape == (2, 3)


def test_resolve_names_every_kind(model_path: Path, tmp_path: Path) -> None:
    from zhisuan.inputs import resolve

    assert resolve(model_path).kind == "onnx"
    assert resolve("ppocr-cls").kind == "zoo" and resolve("ppocr-cls").zoo_name == "ppocr-cls"
    assert resolve("mypkg.models:build").kind == "torch"
    with pytest.raises(UserError, match="never unpickles"):
        resolve("weights.pth")
    with pytest.raises(UserError, match="this command takes an ONNX file"):
        resolve("mypkg.models:build", accept=("onnx",))
    with pytest.raises(UserError, match="not a zhisuan package"):
        resolve(tmp_path)


def test_agreement_metrics() -> None:
    ref = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]], np.float32)
    same = agreement(ref, ref.copy())
    assert same.cosine == pytest.approx(1.0) and same.max_abs_error == 0.0 and same.top1_agreement == 1.0
    cand = ref.copy()
    cand[1] = [0.1, 0.5, 0.2]  # second row's argmax moves
    diff = agreement(ref, cand)
    assert diff.top1_agreement == 0.5
    assert diff.max_abs_error == pytest.approx(0.4)
    assert diff.max_rel_error == pytest.approx(4.0)
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0
    assert top1_agreement(np.array(1.0), np.array(1.0)) is None
    with pytest.raises(ValueError, match="shapes differ"):
        agreement(ref, ref[:1])
