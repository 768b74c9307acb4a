"""TensorRT backend: unavailable paths with a fake module, pure helpers, and a real-GPU test."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.runtime import get_backend, load_runtime
from zhisuan.runtime.backend_tensorrt import engine_key, shape_profile
from zhisuan.runtime.base import Precision, TensorSpec

HINT = "pip install tensorrt (needs an NVIDIA GPU)"


@pytest.fixture
def no_tensorrt(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))


@pytest.fixture
def fake_tensorrt_without_gpu(monkeypatch):
    """A tensorrt module that imports, on a machine where CUDA is not available."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.0.0-fake"
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return fake


def test_not_installed_is_unavailable_with_install_hint(no_tensorrt, mlp) -> None:
    status = get_backend("tensorrt").status()
    assert (status.available, status.reason, status.install_hint) == (False, "tensorrt is not installed", HINT)
    with pytest.raises(BackendUnavailableError) as info:
        load_runtime(mlp.path, "tensorrt")
    assert info.value.install_hint == HINT


def test_installed_without_a_gpu_is_unavailable(fake_tensorrt_without_gpu, mlp) -> None:
    status = get_backend("tensorrt").status()
    assert not status.available
    assert status.version == "10.0.0-fake"
    assert "no CUDA GPU" in status.reason
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible"):
        load_runtime(mlp.path, "tensorrt")


def test_shape_profile_defaults_to_a_batch_range() -> None:
    specs = [TensorSpec("x", "float32", ("batch", 3, 8)), TensorSpec("fixed", "float32", (1, 2))]
    assert shape_profile(specs, max_batch=4) == {"x": ((1, 3, 8), (1, 3, 8), (4, 3, 8))}


def test_shape_profile_needs_explicit_shapes_for_other_dynamic_axes() -> None:
    specs = [TensorSpec("ids", "int64", ("batch", "seq"))]
    with pytest.raises(UserError, match=r"dynamic axes \[0, 1\] besides the batch; give shape_profile"):
        shape_profile(specs)
    given = {"ids": [(1, 1), (4, 64), (8, 128)]}
    assert shape_profile(specs, given=given) == {"ids": ((1, 1), (4, 64), (8, 128))}
    with pytest.raises(UserError, match="must be \\(min, opt, max\\) shapes of rank 2"):
        shape_profile(specs, given={"ids": [(1, 1), (4, 64)]})


def test_engine_key_changes_with_everything_that_changes_the_engine() -> None:
    base = dict(trt_version="10.1", gpu="H100 sm90", precision=Precision.FP32, profile={})
    key = engine_key(b"model", **base)
    assert key == engine_key(b"model", **base)
    for change in (
        {"trt_version": "10.2"}, {"gpu": "A100 sm80"}, {"precision": Precision.FP16},
        {"profile": {"x": ((1, 4), (1, 4), (8, 4))}},
    ):
        assert engine_key(b"model", **{**base, **change}) != key
    assert engine_key(b"other", **base) != key


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available(),
    reason="needs tensorrt and an NVIDIA GPU",
)
def test_real_engine_matches_reference_and_is_cached(mlp, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ZHISUAN_CACHE_DIR", str(tmp_path))
    first = load_runtime(mlp.path, "tensorrt", max_batch=8)
    assert first.info.details["engine_from_cache"] is False
    np.testing.assert_allclose(first.run(mlp.feeds)["y"], mlp.reference(mlp.feeds)["y"], rtol=1e-3, atol=1e-3)
    second = load_runtime(mlp.path, "tensorrt", max_batch=8)
    assert second.info.details["engine_from_cache"] is True
    half = load_runtime(mlp.path, "tensorrt", precision="fp16", max_batch=8)
    np.testing.assert_allclose(half.run(mlp.feeds)["y"], mlp.reference(mlp.feeds)["y"], rtol=2e-2, atol=2e-2)
