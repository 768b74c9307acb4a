"""efficientnet-lite0: safe weight loading, preprocessing, labelled photo views, and the real model end to end."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from zhisuan import zoo
from zhisuan.errors import UserError
from zhisuan.runtime import load_runtime
from zhisuan.runtime.base import TensorSpec
from zhisuan.zoo.data import images
from zhisuan.zoo.models import efficientnet

CATS = {281, 282, 285}


@pytest.fixture(scope="module")
def views() -> list[images.LabelledView]:
    return images.labelled_views(224)


# --- weights ------------------------------------------------------------------------------------


class NotATensor:
    """Any object that is not a tensor: weights_only=True must refuse to unpickle it."""


def test_a_checkpoint_holding_an_object_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"_fc.weight": torch.zeros(1), "payload": NotATensor()}, path)
    with pytest.raises(UserError, match="not a plain tensor checkpoint"):
        efficientnet.read_state_dict(path)


def test_strict_loading_refuses_a_missing_key() -> None:
    module = efficientnet.new_module()
    state = dict(module.state_dict())
    efficientnet.load_weights(efficientnet.new_module(), state)  # the exact keys load
    del state["_blocks.3._bn1.running_var"]
    with pytest.raises(UserError, match=r"missing 1 key\(s\): _blocks.3._bn1.running_var"):
        efficientnet.load_weights(efficientnet.new_module(), state)


def test_shipped_weights_are_verified_and_fit_exactly() -> None:
    state = efficientnet.read_state_dict(efficientnet.WEIGHTS.path())
    assert set(state) == set(efficientnet.new_module().state_dict())


# --- preprocessing, photos and views ---------------------------------------------------------------


def test_preprocess_is_the_tflite_scaling_in_nchw() -> None:
    pixels = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    pixels[0, 0, 0] = (0, 127, 255)
    x = efficientnet.preprocess(pixels)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [-127 / 128, 0.0, 1.0])


def test_views_are_deterministic_and_labelled_with_valid_classes(views) -> None:
    assert len(views) == len(images.PHOTOS) * len(images.VIEWS) >= 30
    assert all(v.pixels.shape == (224, 224, 3) and v.pixels.dtype == np.uint8 for v in views)
    again = images.labelled_views(224)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(views, again, strict=True))
    by_key = {(v.photo, v.view): v for v in views}
    np.testing.assert_array_equal(by_key["chelsea", "flip"].pixels, by_key["chelsea", "center"].pixels[:, ::-1])
    assert not np.array_equal(by_key["chelsea", "zoom"].pixels, by_key["chelsea", "center"].pixels)
    names = efficientnet.class_names()
    assert len(names) == 1000 and names[281].startswith("tabby") and names[967] == "espresso"
    assert all(0 <= c < 1000 for p in images.PHOTOS for c in p.labels)


def test_top_k_hits_accepts_any_label_of_the_set() -> None:
    logits = np.array([[0.0, 5.0, 1.0, 2.0], [3.0, 0.0, 1.0, 2.0]])
    assert efficientnet.top_k_hits(logits, [(3,), (2, 1)], 1).tolist() == [False, False]
    assert efficientnet.top_k_hits(logits, [(3,), (2, 1)], 2).tolist() == [True, False]
    assert efficientnet.top_k_hits(logits, [(3,), (2, 1)], 3).tolist() == [True, True]


class FixedBatchRuntime:
    """A fake runtime whose model takes exactly one image; logit c is the image mean times c."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("image", "float32", (1, 3, 224, 224))]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec("logits", "float32", (1, 1000))]

    def run(self, feeds, output_names=None):
        image = feeds["image"]
        self.batches.append(len(image))
        return {"logits": image.mean(axis=(1, 2, 3))[:, None] * np.arange(1000, dtype=np.float32)}


def test_classify_feeds_a_fixed_batch_model_one_image_at_a_time() -> None:
    rt = FixedBatchRuntime()
    imgs = np.stack([np.full((3, 224, 224), v, np.float32) for v in (1.0, -1.0, 2.0)])
    logits = efficientnet.classify(rt, imgs)  # type: ignore[arg-type]
    assert rt.batches == [1, 1, 1]
    assert logits.shape == (3, 1000) and logits[:, 10].tolist() == [10.0, -10.0, 20.0]


# --- the real model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported():
    return zoo.export("efficientnet-lite0")


@pytest.mark.slow
def test_onnx_matches_torch_and_predicts_the_cat(exported, views) -> None:
    pixels = np.stack([v.pixels for v in views[:4]])
    module = efficientnet.torch_model().module
    with torch.inference_mode():
        want = module(torch.from_numpy(efficientnet.preprocess(pixels))).numpy()
    with load_runtime(exported.path, "onnxruntime", intra_op_threads=2) as rt:
        got = efficientnet.classify(rt, efficientnet.preprocess(pixels))
        top = efficientnet.predict(rt, pixels[:1])[0]
    assert float(np.abs(got - want).max()) < 1e-4  # logits of magnitude ~10
    assert views[0].photo == "chelsea" and top[0][0] in CATS and top[0][2] > 0.3


@pytest.mark.slow
def test_top5_on_the_labelled_views_and_on_a_copied_file(exported, tmp_path) -> None:
    result = zoo.evaluate("efficientnet-lite0", intra_op_threads=2)
    assert result.metric == "top5_accuracy" and result.samples == 35
    assert result.value >= 0.9  # measured 1.0 (35/35)
    assert result.secondary["top1_accuracy"] >= 0.8  # measured 0.914 (32/35)
    assert result.secondary["mean_label_probability"] > 0.6  # measured 0.735
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(exported.path, copy)
    again = zoo.evaluate("efficientnet-lite0", model=copy, intra_op_threads=2)
    assert (again.value, again.secondary["top1_accuracy"]) == (result.value, result.secondary["top1_accuracy"])
    subset = zoo.evaluate("efficientnet-lite0", model=copy, samples=10, seed=1)
    assert subset.samples == 10


@pytest.mark.slow
def test_torch_runtime_gives_the_same_scores(exported) -> None:
    onnx_result = zoo.evaluate("efficientnet-lite0", intra_op_threads=2)
    torch_result = zoo.evaluate("efficientnet-lite0", runtime="torch", intra_op_threads=2)
    assert torch_result.value == onnx_result.value
    assert torch_result.secondary["top1_accuracy"] == onnx_result.secondary["top1_accuracy"]
    assert torch_result.secondary["mean_label_probability"] == pytest.approx(
        onnx_result.secondary["mean_label_probability"], abs=1e-5
    )
