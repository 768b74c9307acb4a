"""Declarative processing steps: each op against numpy, validation errors, signature inversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zhisuan.errors import UserError
from zhisuan.serve import processing
from zhisuan.serve.processing import Sig, apply_steps, forward_signature, request_signature, validate_steps


def _pre(steps: list[dict], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return apply_steps(validate_steps(steps, stage="preprocess"), tensors, stage="preprocess")


def _post(steps: list[dict], tensors: dict[str, np.ndarray], **kw: object) -> dict[str, np.ndarray]:
    return apply_steps(validate_steps(steps, stage="postprocess"), tensors, stage="postprocess", **kw)


def test_image_preprocessing_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    out = _pre(
        [
            {"op": "cast", "input": "img", "from": "UINT8", "dtype": "float32"},
            {"op": "scale", "input": "img", "scale": 1 / 255},
            {"op": "transpose", "input": "img", "perm": [0, 3, 1, 2]},
            {"op": "normalize", "input": "img", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "axis": 1},
        ],
        {"img": pixels},
    )
    mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    expected = (np.transpose(pixels / 255.0, (0, 3, 1, 2)) - mean) / std
    assert out["img"].dtype == np.float32 and out["img"].shape == (2, 3, 4, 5)
    assert out["img"].flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out["img"], expected, rtol=1e-5, atol=1e-5)


def test_scale_on_integers_gives_float32_and_clip_bounds() -> None:
    out = _pre([{"op": "scale", "input": "x", "scale": 0.5, "offset": 1}, {"op": "clip", "input": "x", "max": 2.0}],
               {"x": np.array([0, 2, 4], dtype=np.int64)})
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], [1.0, 2.0, 2.0])


def test_rename_consumes_the_request_tensor() -> None:
    out = _pre([{"op": "cast", "input": "raw", "dtype": "FP32", "as": "x"}], {"raw": np.array([1, 2], dtype=np.int32)})
    assert list(out) == ["x"] and out["x"].dtype == np.float32


def test_postprocessing_softmax_topk_argmax_labels_drop() -> None:
    logits = np.array([[1.0, 3.0, 2.0, 0.0], [0.5, 0.1, 0.2, 4.0]], dtype=np.float32)
    out = _post(
        [
            {"op": "softmax", "output": "logits", "as": "p"},
            {"op": "topk", "output": "p", "k": 2, "as": "top", "indices_as": "ids"},
            {"op": "argmax", "output": "logits", "as": "best"},
            {"op": "labels", "output": "ids", "labels": ["a", "b", "c", "d"], "as": "names"},
            {"op": "drop", "outputs": ["p"]},
        ],
        {"logits": logits},
    )
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    assert set(out) == {"logits", "top", "ids", "best", "names"}
    np.testing.assert_array_equal(out["ids"], [[1, 2], [3, 0]])
    assert out["ids"].dtype == np.int64
    np.testing.assert_allclose(out["top"], np.take_along_axis(p, out["ids"], axis=1), rtol=1e-6)
    np.testing.assert_array_equal(out["best"], [1, 3])
    assert out["names"].dtype == object and out["names"].tolist() == [[b"b", b"c"], [b"d", b"a"]]


def test_topk_is_stable_on_ties_and_takes_the_whole_axis() -> None:
    x = np.array([[2.0, 5.0, 5.0, 1.0]], dtype=np.float32)
    out = _post([{"op": "topk", "output": "x", "k": 4}], {"x": x})
    np.testing.assert_array_equal(out["x_indices"], [[1, 2, 0, 3]])
    np.testing.assert_array_equal(out["x"], [[5.0, 5.0, 2.0, 1.0]])


def test_labels_out_of_range_is_a_user_error() -> None:
    with pytest.raises(UserError, match="outside the 2 labels"):
        _post([{"op": "labels", "output": "ids", "labels": ["a", "b"]}], {"ids": np.array([0, 2], dtype=np.int64)})


def test_labels_file_is_read_relative_to_the_package(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "names.txt").write_text("cat\ndog\n", encoding="utf-8")
    steps = validate_steps([{"op": "labels", "output": "c", "labels_file": "labels/names.txt"}], stage="postprocess",
                           signature={"c": Sig("INT64", (-1,))}, base=tmp_path)
    labels = processing.load_labels(steps, tmp_path)
    out = apply_steps(steps, {"c": np.array([1, 0])}, stage="postprocess", labels=labels)
    assert out["c"].tolist() == [b"dog", b"cat"]


@pytest.mark.parametrize(
    ("steps", "stage", "message"),
    [
        ([{"op": "rotate", "input": "x"}], "preprocess", "unknown op 'rotate'"),
        ([{"op": "scale", "input": "x", "scael": 2}], "preprocess", "unknown key(s) 'scael'"),
        ([{"op": "cast", "input": "x"}], "preprocess", "missing 'dtype'"),
        ([{"op": "topk", "input": "x", "k": 1}], "preprocess", "not a preprocess op"),
        ([{"op": "scale", "input": "x", "scale": 0}], "preprocess", "'scale' must not be 0"),
        ([{"op": "normalize", "input": "x", "mean": [1, 2], "std": [1]}], "preprocess", "has 2 values but 'std' has 1"),
        ([{"op": "normalize", "input": "x", "mean": [0, 0, 0, 0], "std": [1, 1, 1, 1]}], "preprocess", "has 3 channels"),
        ([{"op": "transpose", "input": "x", "perm": [0, 0, 1, 2]}], "preprocess", "permutation"),
        ([{"op": "cast", "input": "x", "dtype": "float128x"}], "preprocess", "unknown datatype"),
        ([{"op": "scale", "input": "nope", "scale": 2}], "preprocess", "no tensor 'nope'"),
        ([{"op": "topk", "output": "y", "k": 11}], "postprocess", "'k' must be in 1..10"),
        ([{"op": "labels", "output": "y", "labels": ["a"]}], "postprocess", "maps integer class ids"),
        ([{"op": "drop", "outputs": ["y"]}], "postprocess", "leaves no output"),
        ("not a list", "postprocess", "must be a JSON list"),
        ([3], "postprocess", "must be an object"),
    ],
)
def test_bad_steps_fail_with_a_clear_message(steps: object, stage: str, message: str) -> None:
    signature = {"x": Sig("FP32", (-1, 3, 8, 8))} if stage == "preprocess" else {"y": Sig("FP32", (-1, 10))}
    with pytest.raises(UserError) as exc:
        validate_steps(steps, stage=stage, signature=signature)  # type: ignore[arg-type]
    assert message in str(exc.value)


def test_every_op_is_a_registered_class_and_an_unknown_op_lists_them() -> None:
    from zhisuan.serve.ops.base import REGISTRY, Op

    assert processing.OPS == (
        "argmax", "cast", "clip", "drop", "labels", "normalize", "scale", "softmax", "topk", "transpose"
    )
    assert all(isinstance(op, Op) and op.name == name for name, op in REGISTRY.items())
    with pytest.raises(UserError) as exc:
        validate_steps([{"op": ["softmax"], "output": "y"}], stage="postprocess")
    assert str(exc.value) == f"postprocess step 1 (['softmax']): unknown op ['softmax']; known: {', '.join(processing.OPS)}"


def test_request_signature_inverts_transpose_and_cast() -> None:
    steps = validate_steps(
        [
            {"op": "cast", "input": "image", "from": "UINT8", "dtype": "FP32"},
            {"op": "transpose", "input": "image", "perm": [0, 3, 1, 2]},
        ],
        stage="preprocess",
    )
    model = {"image": Sig("FP32", (-1, 3, 224, 200))}
    request = request_signature(steps, model)
    assert request == {"image": Sig("UINT8", (-1, 224, 200, 3))}
    assert forward_signature(steps, request, stage="preprocess") == model


def test_datatype_names() -> None:
    assert processing.v2_datatype("float32") == "FP32"
    assert processing.v2_datatype(np.dtype(np.bool_)) == "BOOL"
    assert processing.v2_datatype(np.array([b"a"], dtype=object).dtype) == "BYTES"
    assert processing.numpy_dtype("INT8") == np.int8
    with pytest.raises(UserError):
        processing.v2_datatype("complex64")


def test_parse_steps_from_text_and_file(tmp_path: Path) -> None:
    step = {"op": "argmax", "output": "y"}
    (tmp_path / "post.json").write_text(json.dumps([step]), encoding="utf-8")
    assert processing.parse_steps(f"@{tmp_path / 'post.json'}", what="--postprocess") == [step]
    assert processing.parse_steps(json.dumps(step), what="--postprocess") == [step]
    assert processing.parse_steps(None, what="--postprocess") == []
    with pytest.raises(UserError, match="not valid JSON"):
        processing.parse_steps("[{", what="--postprocess")
    with pytest.raises(UserError, match="cannot read"):
        processing.parse_steps(f"@{tmp_path / 'missing.json'}", what="--postprocess")
