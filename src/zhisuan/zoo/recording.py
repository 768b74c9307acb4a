"""Feeds recorded from running a zoo model itself.

The inputs of a stateful model (a KV cache, a recurrent state) are only realistic when they come
from the model's own previous outputs, so they are recorded while a driver runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zhisuan.zoo.base import Feed


class FeedRecorder:
    """A runtime wrapper that keeps a copy of every feed it runs."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.feeds: list[Feed] = []

    def inputs(self) -> Any:
        return self.runtime.inputs()

    def outputs(self) -> Any:
        return self.runtime.outputs()

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.runtime.run(feeds, output_names)


def recorded_feeds(name: str, drive: Callable[[FeedRecorder], object]) -> list[Feed]:
    """Every feed ``drive`` ran through zoo model ``name`` (float ONNX, ONNX Runtime on the CPU)."""
    from zhisuan import zoo
    from zhisuan.runtime import load_runtime

    with load_runtime(zoo.model_path(name), "onnxruntime", intra_op_threads=2) as runtime:
        recorder = FeedRecorder(runtime)
        drive(recorder)
    return recorder.feeds
