"""Dynamic batching: gather concurrent requests of one model version into batches.

One :class:`DynamicBatcher` per model version. Requests wait in a bounded queue; a dispatcher
takes the oldest request, adds later requests whose non-batch shapes and dtypes match (rows
along the first axis, up to ``max_batch_size``), waits at most ``max_queue_delay_ms`` for more,
and runs the batch through ``run`` (an executor's ``infer``). Up to ``concurrency`` batches are
in flight at once; while they are, new requests keep queueing and the next batch grows, which is
what keeps a busy server efficient. Results are split back by row offsets.

A full queue raises :class:`~zhisuan.serve.protocol.ServeError` 429 with ``Retry-After``; a
closed batcher 503; a request that waits longer than ``timeout_s`` 504. :meth:`DynamicBatcher.close`
(unload, version removal, shutdown) refuses new requests but runs every accepted one to the end. When a batch of several
requests fails, each request is re-run alone so that one poisonous input fails only itself.

>>> batcher = DynamicBatcher(executor.infer, BatchPolicy(max_batch_size=8))  # doctest: +SKIP
>>> await batcher.start()  # doctest: +SKIP
>>> result = await batcher.submit({"x": x})  # doctest: +SKIP
>>> result.outputs["y"], result.batch_size, result.queue_ms  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from zhisuan.errors import UserError
from zhisuan.results import Record
from zhisuan.serve.config import (
    MAX_BATCH_SIZE,
    MAX_CONCURRENCY,
    MAX_QUEUE_DELAY_MS,
    MAX_QUEUE_SIZE,
    MAX_REQUEST_TIMEOUT_S,
)
from zhisuan.serve.protocol import ServeError

__all__ = ["BatchPolicy", "BatchResult", "BatchStats", "DynamicBatcher"]

RunFn = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
ShapeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class BatchPolicy(Record):
    """How one model version batches. ``max_batch_size`` <= 1 turns batching off."""

    max_batch_size: int = 8  # rows along the first axis
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()  # dispatch at once when a batch reaches one
    max_queue_size: int = 256  # requests waiting; one more gets 429
    concurrency: int = 1  # batches in flight at once
    timeout_s: float = 30.0  # from enqueue to result

    def __post_init__(self) -> None:
        if not 0 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise UserError(f"max batch size must be 0..{MAX_BATCH_SIZE}, not {self.max_batch_size}")
        if not 0 <= self.max_queue_delay_ms <= MAX_QUEUE_DELAY_MS:
            raise UserError(f"max queue delay must be 0..{MAX_QUEUE_DELAY_MS} ms, not {self.max_queue_delay_ms}")
        if not 1 <= self.max_queue_size <= MAX_QUEUE_SIZE:
            raise UserError(f"max queue size must be 1..{MAX_QUEUE_SIZE}, not {self.max_queue_size}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UserError(f"concurrency must be 1..{MAX_CONCURRENCY}, not {self.concurrency}")
        if not 0 < self.timeout_s <= MAX_REQUEST_TIMEOUT_S:
            raise UserError(f"request timeout must be > 0 and <= {MAX_REQUEST_TIMEOUT_S:g} s, not {self.timeout_s}")


@dataclass(frozen=True)
class BatchResult:
    """What one request got back from the batch it ran in."""

    outputs: dict[str, np.ndarray]
    queue_ms: float  # enqueue -> batch dispatched
    compute_ms: float  # the batch's run time
    batch_size: int  # rows of the batch it ran in
    batch_requests: int  # requests in that batch


@dataclass(frozen=True)
class BatchStats:
    """One executed batch, for metrics (``on_batch`` callback)."""

    rows: int
    requests: int
    compute_ms: float
    ok: bool


@dataclass(eq=False)
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    key: ShapeKey
    seq: int
    enqueued: float
    future: asyncio.Future[BatchResult]
    abandoned: bool = False
    dispatched_at: float = field(default=0.0)


class DynamicBatcher:
    """Queue, batch and run requests of one model version (see the module docstring)."""

    def __init__(
        self,
        run: RunFn,
        policy: BatchPolicy | None = None,
        *,
        batchable: bool = True,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "model",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.policy = policy or BatchPolicy()
        self._run_fn = run
        self._max_rows = self.policy.max_batch_size if batchable and self.policy.max_batch_size > 1 else 0
        self._on_batch = on_batch
        self._name = name
        self._clock = clock
        self._queues: dict[ShapeKey, deque[_Item]] = {}
        self._depth = 0
        self._seq = itertools.count()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        # Every accepted request until its future is done (queued, in a filling batch or running):
        # what close() waits for, so that no accepted request is dropped.
        self._accepted: set[_Item] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.batches = 0  # batches executed (for tests and status)

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        if self._task is None:
            self._arrived = asyncio.Event()
            self._slots = asyncio.Semaphore(self.policy.concurrency)
            self._task = asyncio.create_task(self._dispatch_loop(), name=f"batcher-{self._name}")

    async def close(self, *, drain_s: float | None = None) -> None:
        """Refuse new requests (503), finish every accepted one, then stop.

        Accepted requests, queued or in a batch still filling, run to completion: the filling
        batch is dispatched at once (no request can join it any more). Whatever is still
        unanswered after ``drain_s`` (default: the request timeout) is answered 503.
        """
        self._closed = True
        if self._arrived is not None:
            self._arrived.set()  # wake a dispatcher that is waiting for more rows
        deadline = self._clock() + (self.policy.timeout_s if drain_s is None else drain_s)
        if self._accepted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - self._clock()))
        if self._running:  # batches whose requests all gave up still hold the executor
            await asyncio.wait(set(self._running), timeout=max(0.0, deadline - self._clock()))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drain()
        for item in list(self._accepted):
            _fail(item, ServeError(503, f"{self._name} is shutting down; the request did not finish in time"))

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not yet dispatched)."""
        return self._depth

    @property
    def in_flight(self) -> int:
        """Batches running now."""
        return len(self._running)

    @property
    def batching(self) -> bool:
        return self._max_rows > 1

    # requests --------------------------------------------------------------------------------
    async def submit(self, feeds: Mapping[str, np.ndarray]) -> BatchResult:
        """Queue one request's feeds and wait for its share of a batch's outputs."""
        if self._closed or self._task is None:
            raise ServeError(503, f"{self._name} is not accepting requests (shutting down)", {"Retry-After": "1"})
        if self._depth >= self.policy.max_queue_size:
            raise ServeError(
                429,
                f"{self._name}: the queue is full ({self.policy.max_queue_size} requests waiting); retry later",
                {"Retry-After": "1"},
            )
        feeds = dict(feeds)
        rows = _rows(feeds) if self._max_rows else 1
        if self._max_rows and rows > self._max_rows:
            raise ServeError(
                400, f"the request's batch of {rows} rows exceeds this model's max batch size {self._max_rows}"
            )
        loop = asyncio.get_running_loop()
        item = _Item(feeds, rows, _shape_key(feeds), next(self._seq), self._clock(), loop.create_future())
        self._accepted.add(item)
        self._idle.clear()
        item.future.add_done_callback(lambda _: self._settled(item))
        self._queues.setdefault(item.key, deque()).append(item)
        self._depth += 1
        assert self._arrived is not None
        self._arrived.set()
        # one timer per request (cheaper than wait_for + shield on this hot path)
        timer = loop.call_later(self.policy.timeout_s, self._expire, item)
        try:
            return await item.future
        except asyncio.CancelledError:  # the client went away: do not run it if still queued
            self._abandon(item)
            raise
        finally:
            timer.cancel()

    def _settled(self, item: _Item) -> None:
        self._accepted.discard(item)
        if not self._accepted:
            self._idle.set()

    def _expire(self, item: _Item) -> None:
        if not item.future.done():
            self._abandon(item)
            item.future.set_exception(
                ServeError(504, f"{self._name}: no result within the {self.policy.timeout_s:g} s request timeout")
            )

    def _abandon(self, item: _Item) -> None:
        item.abandoned = True
        queue = self._queues.get(item.key)
        if queue is not None and item in queue:
            queue.remove(item)
            self._depth -= 1

    # dispatcher ------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        assert self._slots is not None and self._arrived is not None
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _oldest(self) -> _Item | None:
        heads = [q[0] for q in self._queues.values() if q]
        return min(heads, key=lambda it: it.seq) if heads else None

    def _pop(self, item: _Item) -> None:
        self._queues[item.key].popleft()
        self._depth -= 1
        if not self._queues[item.key]:
            del self._queues[item.key]

    async def _collect(self) -> list[_Item]:
        """Wait for the oldest request, then fill a batch with compatible ones until full or due."""
        assert self._arrived is not None
        while (first := self._oldest()) is None:
            self._arrived.clear()
            await self._arrived.wait()
        self._pop(first)
        batch, rows = [first], first.rows
        if not self._max_rows:
            return batch
        deadline = first.enqueued + self.policy.max_queue_delay_ms / 1000.0
        preferred = set(self.policy.preferred_batch_sizes)
        while rows < self._max_rows:
            queue = self._queues.get(first.key)
            while queue and rows + queue[0].rows <= self._max_rows:
                item = queue[0]
                self._pop(item)
                batch.append(item)
                rows += item.rows
                queue = self._queues.get(first.key)
            if rows >= self._max_rows or (queue and rows + queue[0].rows > self._max_rows):
                break  # full, or the next compatible request would overflow it
            if rows in preferred or self._closed:
                break  # closed: nothing more can join, so do not wait for the delay
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        assert self._slots is not None
        try:
            now = self._clock()
            live = [item for item in batch if not item.abandoned]
            for item in live:
                item.dispatched_at = now
            if live:
                await self._run_batch(live)
        finally:
            self._slots.release()

    async def _run_batch(self, batch: list[_Item]) -> None:
        rows = sum(item.rows for item in batch)
        feeds = batch[0].feeds if len(batch) == 1 else _concat([item.feeds for item in batch])
        t0 = self._clock()
        try:
            outputs = await self._run_fn(feeds)
            results = _split(outputs, batch, rows)
        except Exception as exc:
            compute_ms = (self._clock() - t0) * 1000.0
            self.batches += 1
            self._report(BatchStats(rows, len(batch), compute_ms, ok=False))
            if len(batch) > 1:  # isolate the request(s) that make the model fail
                for item in batch:
                    await self._run_batch([item])
                return
            _fail(batch[0], _as_serve_error(exc, self._name))
            return
        compute_ms = (self._clock() - t0) * 1000.0
        self.batches += 1
        self._report(BatchStats(rows, len(batch), compute_ms, ok=True))
        for item, outs in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(
                    BatchResult(
                        outputs=outs,
                        queue_ms=(item.dispatched_at - item.enqueued) * 1000.0,
                        compute_ms=compute_ms,
                        batch_size=rows,
                        batch_requests=len(batch),
                    )
                )

    def _report(self, stats: BatchStats) -> None:
        if self._on_batch is not None:
            self._on_batch(stats)

    def _drain(self) -> list[_Item]:
        items = [item for q in self._queues.values() for item in q]
        self._queues.clear()
        self._depth = 0
        return items


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    if not feeds:
        raise ServeError(400, "the request has no inputs")
    counts = {int(arr.shape[0]) if arr.ndim else -1 for arr in feeds.values()}
    if len(counts) != 1 or -1 in counts:
        raise ServeError(400, "every input of a batched model needs the same first (batch) dimension")
    return counts.pop()


def _shape_key(feeds: Mapping[str, np.ndarray]) -> ShapeKey:
    return tuple(sorted((name, arr.dtype.str, tuple(arr.shape[1:])) for name, arr in feeds.items()))


def _concat(all_feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([f[name] for f in all_feeds], axis=0) for name in all_feeds[0]}


def _split(outputs: Mapping[str, np.ndarray], batch: list[_Item], rows: int) -> list[dict[str, np.ndarray]]:
    if len(batch) == 1:
        return [dict(outputs)]
    per_item: list[dict[str, np.ndarray]] = [{} for _ in batch]
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise ServeError(
                500,
                f"output {name!r} has shape {list(arr.shape)}, not a first axis of {rows} batch rows; "
                "this model cannot be batched (set max_batch_size 0 in its package)",
            )
        start = 0
        for i, item in enumerate(batch):
            per_item[i][name] = arr[start : start + item.rows]
            start += item.rows
    return per_item


def _fail(item: _Item, error: ServeError) -> None:
    if not item.future.done():
        item.future.set_exception(error)


def _as_serve_error(exc: Exception, name: str) -> ServeError:
    """A failure of the model run. The request passed the signature checks before it was queued,
    so this is the model's failure (a 500, which a rollout counts against the version), even when
    the runtime calls it a user error (e.g. ONNX Runtime's "indices out of bounds")."""
    if isinstance(exc, ServeError):
        return exc
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ServeError(500, f"{name} failed to run: {message[:500]}")
