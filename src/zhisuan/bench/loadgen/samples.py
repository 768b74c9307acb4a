"""The query sample library's data: samples held in memory, random from a signature or read from ``.npz``.

>>> from zhisuan.runtime.base import TensorSpec
>>> from zhisuan.bench.loadgen.samples import random_samples
>>> len(random_samples([TensorSpec("x", "float32", ("batch", 4))], 3))
3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.runtime.base import TensorSpec

__all__ = ["SampleSet", "dynamic_batch", "npz_samples", "random_samples"]


def dynamic_batch(specs: Sequence[TensorSpec]) -> bool:
    """Whether every input has a leading axis of free size, so samples concatenate along it."""
    return bool(specs) and all(
        len(s.shape) >= 1 and not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in specs
    )


@dataclass(frozen=True)
class SampleSet:
    """The query sample library's data: one feed per sample, all held in memory.

    With ``batch_axis`` every array has a leading axis of size 1 and samples are concatenated
    along it into batches; ``pad`` names inputs whose other axes differ between samples and how
    to pad them to the longest in a batch (``{"input_ids": (1, 0)}``: axis 1, value 0). Without
    ``batch_axis`` each feed is run on its own (a model with a fixed batch size).
    """

    feeds: tuple[Mapping[str, np.ndarray], ...]
    source: str
    batch_axis: bool = True
    pad: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.feeds:
            raise UserError("the sample set is empty")
        names = list(self.feeds[0])
        for i, feed in enumerate(self.feeds):
            if list(feed) != names:
                raise UserError(f"sample {i} has inputs {list(feed)}, sample 0 has {names}")
            if self.batch_axis and any(np.ndim(a) < 1 or np.shape(a)[0] != 1 for a in feed.values()):
                raise UserError(f"sample {i}: every input needs a leading batch axis of size 1")

    def __len__(self) -> int:
        return len(self.feeds)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.feeds[0])

    def uniform(self) -> bool:
        """Whether every sample has the same shape for every input."""
        first = {k: np.shape(v) for k, v in self.feeds[0].items()}
        return all({k: np.shape(v) for k, v in f.items()} == first for f in self.feeds[1:])

    def describe(self) -> dict[str, Any]:
        first = self.feeds[0]
        return {
            "source": self.source,
            "samples": len(self),
            "inputs": {k: {"dtype": v.dtype.name, "shape_of_first": list(v.shape)} for k, v in first.items()},
            "uniform_shapes": self.uniform(),
            "padding": {k: {"axis": a, "value": v} for k, (a, v) in self.pad.items()},
        }


def random_samples(
    specs: Sequence[TensorSpec],
    count: int,
    *,
    seed: int = 0,
    dim_values: Mapping[str, int] | None = None,
    batch_axis: bool | None = None,
) -> SampleSet:
    """``count`` seeded random samples for a signature (see :func:`zhisuan.runtime.feeds.random_feeds`)."""
    from zhisuan.runtime.feeds import random_feeds

    if count < 1:
        raise UserError(f"the number of random samples must be >= 1, got {count}")
    batched = dynamic_batch(specs) if batch_axis is None else batch_axis
    feeds = tuple(random_feeds(specs, batch=1, seed=seed + i, dim_values=dim_values) for i in range(count))
    sizes = ", ".join(f"{k}={v}" for k, v in (dim_values or {}).items())
    return SampleSet(feeds, f"random from the signature, seed {seed}" + (f", {sizes}" if sizes else ""), batched)


def npz_samples(path: str | Path, specs: Sequence[TensorSpec]) -> SampleSet:
    """Samples from an ``.npz`` file or a directory of them; with a dynamic batch axis, every row is a sample."""
    from zhisuan.runtime.feeds import load_feeds

    files = load_feeds(path, specs=specs)
    if not dynamic_batch(specs):
        return SampleSet(tuple(files), f"npz: {path} ({len(files)} feeds)", batch_axis=False)
    feeds: list[dict[str, np.ndarray]] = []
    for i, feed in enumerate(files):
        rows = {np.shape(v)[0] for v in feed.values()}
        if len(rows) != 1:
            raise UserError(f"{path}: feed {i} has inputs with different batch sizes {sorted(rows)}")
        n = rows.pop()
        feeds.extend({k: np.ascontiguousarray(v[r : r + 1]) for k, v in feed.items()} for r in range(n))
    if not feeds:
        raise UserError(f"{path}: the inputs hold no samples (batch size 0)")
    return SampleSet(tuple(feeds), f"npz: {path} ({len(feeds)} samples)", batch_axis=True)
