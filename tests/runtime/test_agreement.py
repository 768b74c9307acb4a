"""The same tiny graphs give the same numbers on ONNX Runtime, OpenVINO and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from zhisuan.runtime import load_runtime
from zhisuan.runtime.feeds import random_feeds

GRAPHS = ["mlp_static", "mlp_dynamic", "two_outputs", "int64_ids"]
BACKENDS = ["onnxruntime", "openvino", "torch"]


def _load(graph, backend: str):
    model = graph.torch_model if backend == "torch" else graph.path
    return load_runtime(model, backend, intra_op_threads=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", GRAPHS)
def test_backend_matches_numpy_reference(graphs, name: str, backend: str) -> None:
    graph = graphs[name]
    with _load(graph, backend) as rt:
        got = rt.run(graph.feeds)
    want = graph.reference(graph.feeds)
    assert list(got) == list(want)  # every output, keyed by its ONNX name, in graph order
    for key, value in want.items():
        assert got[key].shape == value.shape
        assert got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", GRAPHS)
def test_openvino_agrees_with_onnxruntime_in_f32(graphs, name: str) -> None:
    graph = graphs[name]
    ort_rt, ov_rt = _load(graph, "onnxruntime"), _load(graph, "openvino")
    assert ov_rt.inputs() == ort_rt.inputs()  # same names, dtypes and dim names
    assert ov_rt.outputs() == ort_rt.outputs()
    for batch in (1, 4):
        feeds = random_feeds(ort_rt.inputs(), batch=batch, seed=batch)
        a, b = ort_rt.run(feeds), ov_rt.run(feeds)
        assert a.keys() == b.keys()
        for key in a:
            # f32 on both sides: differences are summation order only (measured <= ~1e-6 here).
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6)


def test_dynamic_batch_runs_several_shapes_on_every_backend(mlp) -> None:
    runtimes = [_load(mlp, backend) for backend in BACKENDS]
    for batch in (1, 2, 7):
        feeds = random_feeds(runtimes[0].inputs(), batch=batch, seed=batch)
        want = mlp.reference(feeds)["y"]
        for rt in runtimes:
            got = rt.run(feeds)["y"]
            assert got.shape == (batch, 8), rt.name
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=rt.name)


def test_results_survive_the_next_run(mlp) -> None:
    # OpenVINO can hand back views of its request buffers; results must be owned copies.
    for backend in BACKENDS:
        rt = _load(mlp, backend)
        first = rt.run({"x": np.ones((2, 4), np.float32)})["y"]
        kept = first.copy()
        rt.run({"x": np.full((2, 4), -3.0, np.float32)})
        np.testing.assert_array_equal(first, kept, err_msg=backend)


def test_output_names_selects_outputs(graphs) -> None:
    graph = graphs["two_outputs"]
    for backend in BACKENDS:
        rt = _load(graph, backend)
        got = rt.run(graph.feeds, output_names=["probs"])
        assert list(got) == ["probs"], backend
        np.testing.assert_allclose(got["probs"].sum(axis=-1), 1.0, rtol=1e-5)
