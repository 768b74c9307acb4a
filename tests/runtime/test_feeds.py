"""Generating, loading and checking model inputs."""

from __future__ import annotations

import numpy as np
import pytest

from zhisuan.errors import UserError
from zhisuan.runtime.base import TensorSpec
from zhisuan.runtime.feeds import (
    DEFAULT_DYNAMIC_DIM,
    INT_HIGH,
    check_feeds,
    load_feeds,
    random_feeds,
    resolve_shape,
)

SPECS = [
    TensorSpec("input_ids", "int64", ("batch", "seq")),
    TensorSpec("attention_mask", "bool", ("batch", "seq")),
    TensorSpec("pixels", "float32", (None, 3, None)),
    TensorSpec("scale", "float16", ()),
]


def test_random_feeds_shapes_dtypes_and_ranges() -> None:
    feeds = random_feeds(SPECS, batch=3, seed=7)
    assert list(feeds) == ["input_ids", "attention_mask", "pixels", "scale"]
    assert feeds["input_ids"].shape == (3, DEFAULT_DYNAMIC_DIM)
    assert feeds["input_ids"].dtype == np.int64
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < INT_HIGH
    assert feeds["attention_mask"].dtype == np.bool_
    assert feeds["attention_mask"].shape == feeds["input_ids"].shape  # "seq" is one size everywhere
    assert feeds["pixels"].shape == (3, 3, DEFAULT_DYNAMIC_DIM)
    assert feeds["pixels"].dtype == np.float32
    assert abs(float(feeds["pixels"].mean())) < 1.0  # standard normal, not uniform [0, 1)
    assert feeds["scale"].shape == () and feeds["scale"].dtype == np.float16
    check_feeds(feeds, SPECS)


def test_random_feeds_is_reproducible_by_seed() -> None:
    a, b, c = random_feeds(SPECS, seed=1), random_feeds(SPECS, seed=1), random_feeds(SPECS, seed=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["pixels"], c["pixels"])


def test_dim_values_set_named_dims_and_batch_sets_the_first_axis() -> None:
    feeds = random_feeds(SPECS, batch=2, dim_values={"seq": 5})
    assert feeds["input_ids"].shape == (2, 5)
    assert feeds["attention_mask"].shape == (2, 5)
    assert resolve_shape(TensorSpec("x", "float32", ("n", 4)), dim_values={"n": 9}) == (9, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch": 0}, "batch must be at least 1"), ({"dim_values": {"seq": 0}}, "at least 1")],
)
def test_random_feeds_rejects_bad_sizes(kwargs, message: str) -> None:
    with pytest.raises(UserError, match=message):
        random_feeds(SPECS, **kwargs)


@pytest.mark.parametrize("dtype", ["object", "unknown", "bfloat16"])
def test_random_feeds_refuses_types_it_cannot_make(dtype: str) -> None:
    with pytest.raises(UserError, match=r"give the inputs in an \.npz file"):
        random_feeds([TensorSpec("text", dtype, (1,))])


def test_check_feeds_reports_every_problem_on_one_line() -> None:
    feeds = {
        "input_ids": np.zeros((1, 4), np.int32),  # wrong dtype
        "pixels": np.zeros((1, 3), np.float32),  # wrong rank
        "extra": np.zeros(1),  # unknown
    }
    with pytest.raises(UserError) as info:
        check_feeds(feeds, SPECS)
    message = str(info.value)
    assert "\n" not in message
    assert "missing ['attention_mask', 'scale']" in message
    assert "unknown ['extra']" in message
    assert "'input_ids' is int32, the model takes int64" in message
    assert "'pixels' has rank 2" in message


def test_check_feeds_checks_fixed_dims_but_not_dynamic_ones() -> None:
    spec = [TensorSpec("x", "float32", ("batch", 4))]
    check_feeds({"x": np.zeros((11, 4), np.float32)}, spec)
    with pytest.raises(UserError, match=r"'x' has shape \[2, 5\], the model takes \['batch', 4\]"):
        check_feeds({"x": np.zeros((2, 5), np.float32)}, spec)


def test_check_feeds_checks_only_names_for_unknown_specs() -> None:
    spec = [TensorSpec("x", "unknown", ())]
    check_feeds({"x": np.zeros((2, 3, 4))}, spec)
    with pytest.raises(UserError, match="missing"):
        check_feeds({}, spec)


def test_load_feeds_from_a_file_and_a_directory(tmp_path) -> None:
    first = random_feeds(SPECS, seed=1)
    second = random_feeds(SPECS, seed=2)
    np.savez(tmp_path / "b.npz", **second)
    np.savez(tmp_path / "a.npz", **first)
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_feeds(tmp_path, specs=SPECS)
    assert len(loaded) == 2
    for key in first:  # sorted by file name: a.npz first
        np.testing.assert_array_equal(loaded[0][key], first[key])
        np.testing.assert_array_equal(loaded[1][key], second[key])
    single = load_feeds(tmp_path / "a.npz")
    assert len(single) == 1 and set(single[0]) == set(first)


def test_load_feeds_refuses_object_arrays(tmp_path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UserError, match="object array") as info:
        load_feeds(path)
    assert "never unpickles" in str(info.value)


def test_load_feeds_checks_names_against_the_model(tmp_path) -> None:
    np.savez(tmp_path / "one.npz", wrong=np.zeros((1, 4), np.float32))
    with pytest.raises(UserError, match=r"one\.npz: inputs do not match the model: missing \['x'\]"):
        load_feeds(tmp_path, specs=[TensorSpec("x", "float32", ("batch", 4))])


@pytest.mark.parametrize("content", [b"not a zip file", b""])
def test_load_feeds_bad_files_are_user_errors(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(UserError, match="cannot read inputs from"):
        load_feeds(path)


def test_load_feeds_missing_paths_and_empty_dirs(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_feeds(tmp_path / "nope.npz")
    with pytest.raises(UserError, match=r"no \.npz files"):
        load_feeds(tmp_path)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(UserError, match=r"not an \.npz of named inputs"):
        load_feeds(tmp_path / "plain.npy")


def test_random_feeds_give_transformer_inputs_valid_values() -> None:
    specs = [
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
        TensorSpec("token_type_ids", "int64", ("batch", "seq")),
        TensorSpec("position_ids", "int64", ("batch", "seq")),
    ]
    feeds = random_feeds(specs, batch=2, dim_values={"seq": 5})
    assert feeds["attention_mask"].shape == (2, 5) and (feeds["attention_mask"] == 1).all()
    assert (feeds["token_type_ids"] == 0).all()
    assert feeds["position_ids"].tolist() == [[0, 1, 2, 3, 4]] * 2
    assert feeds["input_ids"].max() > 1  # ids stay random
