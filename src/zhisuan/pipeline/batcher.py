"""Batching across streams, as DeepStream's nvstreammux: frames of every stream share one queue and
leave it in batches of up to ``max_batch``, at most ``max_wait_ms`` after a batch's first frame.

A batch is never held back waiting for a particular stream, so a slow or stalled stream cannot
hold up the others; frames of one stream keep their order because the queue is FIFO.

>>> from zhisuan.pipeline.sources import FrameQueue
>>> q = FrameQueue(8, keep_latest=False)
>>> for i in range(5):
...     _ = q.put(i)
>>> q.close()
>>> b = Batcher(max_batch=2, max_wait_ms=0)
>>> b.collect(q.get), b.collect(q.get), b.collect(q.get), b.collect(q.get)
([0, 1], [2, 3], [4], None)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from zhisuan.pipeline.sources import END

__all__ = ["Batcher"]

#: How often a waiting batcher looks at its stop event.
POLL_S = 0.05


class Batcher:
    """Groups items taken with ``get(timeout)`` (which returns :data:`~zhisuan.pipeline.sources.END`
    at the end and raises ``TimeoutError``) into lists; counts batches and their sizes."""

    def __init__(self, max_batch: int, max_wait_ms: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._clock = clock
        self.ended = False
        self.batches = 0
        self.items = 0
        self.sizes: dict[int, int] = {}  # batch size -> how many batches had it

    def collect(self, get: Callable[[float | None], Any], stop: threading.Event | None = None) -> list[Any] | None:
        """The next batch, or None once the input ended (or ``stop`` was set) and nothing is left."""
        if self.ended:
            return None
        while True:
            if stop is not None and stop.is_set():
                return None
            try:
                first = get(POLL_S)
                break
            except TimeoutError:
                continue
        if first is END:
            self.ended = True
            return None
        batch = [first]
        deadline = self._clock() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - self._clock()
            try:
                item = get(left) if left > 0 else get(0)
            except TimeoutError:
                break
            if item is END:
                self.ended = True
                break
            batch.append(item)
        self.batches += 1
        self.items += len(batch)
        self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
        return batch

    @property
    def mean_batch(self) -> float | None:
        return self.items / self.batches if self.batches else None
