"""Test helpers for pipelines (as :mod:`zhisuan.serve.testing` is for the server): a tiny ONNX
detector with the real detector's I/O contract, and a scripted runtime that answers from Python.

:func:`quadrant_detector` builds ``images [N, 3, S, S] -> boxes [N, 4, 4], scores [N, 4, 80]``: the
four boxes are the quadrants of the input, each scored as class 0 with the mean brightness of
that quadrant (0..1). It runs on every ONNX backend, so a test knows what a frame must give.

>>> path = quadrant_detector(tmp_path / "tiny.onnx")  # doctest: +SKIP
>>> rt = ScriptedRuntime(delay_s=0.02)               # a slow model: 20 ms a call
>>> rt.run({"images": np.zeros((2, 3, 416, 416), np.float32)})["scores"].shape
(2, 4, 80)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from zhisuan.runtime.base import RunnerBase, RuntimeInfo, TensorSpec

__all__ = ["NUM_CLASSES", "QUADRANTS", "ScriptedRuntime", "quadrant_boxes", "quadrant_detector"]

NUM_CLASSES = 80
QUADRANTS = 4


def quadrant_boxes(size: int = 416) -> np.ndarray:
    """The four quadrant boxes (xyxy, input pixels) in the model's output order."""
    h = size / 2
    return np.array([[0, 0, h, h], [h, 0, size, h], [0, h, h, size], [h, h, size, size]], dtype=np.float32)


def quadrant_detector(path: str | Path, *, size: int = 416, opset: int = 13) -> Path:
    """Write the quadrant detector to ``path`` (dynamic batch ``N``) and return the path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    half = size // 2
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[half, half], strides=[half, half]),
        helper.make_node("ReduceMean", ["pooled"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["gray", "flat_shape"], ["flat"]),
        helper.make_node("Pad", ["flat", "pads"], ["scores"], mode="constant"),
        helper.make_node("Shape", ["images"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "box_dims"], ["box_shape"], axis=0),
        helper.make_node("Expand", ["quadrants", "box_shape"], ["boxes"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, QUADRANTS, 1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, NUM_CLASSES - 1], np.int64), "pads"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([QUADRANTS, 4], np.int64), "box_dims"),
        numpy_helper.from_array(quadrant_boxes(size)[None], "quadrants"),
    ]
    graph = helper.make_graph(
        nodes, "quadrant_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", QUADRANTS, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", QUADRANTS, NUM_CLASSES])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="zhisuan-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


Outputs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _quadrant_outputs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, _, size, _ = images.shape
    half = size // 2
    gray = images.mean(axis=1)
    means = np.stack([gray[:, :half, :half].mean((1, 2)), gray[:, :half, half:].mean((1, 2)),
                      gray[:, half:, :half].mean((1, 2)), gray[:, half:, half:].mean((1, 2))], axis=1)
    scores = np.zeros((n, QUADRANTS, NUM_CLASSES), np.float32)
    scores[:, :, 0] = means
    return np.broadcast_to(quadrant_boxes(size), (n, QUADRANTS, 4)).copy(), scores


class ScriptedRuntime(RunnerBase):
    """A :class:`~zhisuan.runtime.base.Runtime` with the detector's signature that answers from
    Python: ``outputs(images) -> (boxes, scores)`` (default: the quadrant detector's answer),
    after sleeping ``delay_s`` (a slow model). ``fail_after``: raise on that many-th call.
    Records each call's batch size in :attr:`batch_sizes`."""

    name = "scripted"

    def __init__(self, *, delay_s: float = 0.0, size: int = 416, outputs: Outputs | None = None,
                 fail_after: int | None = None) -> None:
        self.delay_s = delay_s
        self._answer = outputs or _quadrant_outputs
        self.fail_after = fail_after
        self.batch_sizes: list[int] = []
        self.closed = False
        self._lock = threading.Lock()
        self._inputs = [TensorSpec("images", "float32", ("N", 3, size, size))]
        self._outputs = [TensorSpec("boxes", "float32", ("N", QUADRANTS, 4)),
                         TensorSpec("scores", "float32", ("N", QUADRANTS, NUM_CLASSES))]
        self._info = RuntimeInfo("scripted", "0", "cpu", "python", "fp32", None, None)

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        images = np.asarray(feeds["images"])
        with self._lock:
            self.batch_sizes.append(int(images.shape[0]))
            calls = len(self.batch_sizes)
        if self.fail_after is not None and calls >= self.fail_after:
            raise RuntimeError(f"scripted failure on call {calls}")
        if self.delay_s:
            time.sleep(self.delay_s)
        boxes, scores = self._answer(images)
        out = {"boxes": boxes, "scores": scores}
        return {k: out[k] for k in (output_names or out)}

    @property
    def runs(self) -> int:
        return len(self.batch_sizes)

    def close(self) -> None:
        self.closed = True
