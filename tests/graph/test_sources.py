from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zhisuan.compare.metrics import agreement, cosine_similarity, top1_agreement
from zhisuan.errors import UserError
from zhisuan.graph.sources import resolve_model, sample_inputs


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


def test_a_zoo_model_is_verified_on_its_realistic_inputs(model_path: Path, monkeypatch) -> None:
    from zhisuan.quantize import calibration

    calls = []

    def fake_zoo_feeds(name, *, batches, seed):
        calls.append((name, batches, seed))
        return [{"x": np.full((1, 3), 7.0, np.float32)}] if name == "known" else None

    monkeypatch.setattr(calibration, "zoo_feeds", fake_zoo_feeds)
    assert sample_inputs(model_path, zoo_name="known")[0]["x"][0, 0] == 7.0
    assert calls == [("known", 1, calibration.METRIC_SEED)]
    assert sample_inputs(model_path, zoo_name="unknown")[0]["x"].dtype == np.float32  # random fallback
    assert sample_inputs(model_path, random=2, zoo_name="known")[0]["x"][0, 0] != 7.0  # --random wins


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
