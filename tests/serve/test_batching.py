"""The dynamic batcher with fake executors: batching, splitting, delays, back-pressure, timeouts, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from zhisuan.errors import UserError
from zhisuan.serve.batching import BatchPolicy, BatchStats, DynamicBatcher
from zhisuan.serve.protocol import ServeError

Feeds = dict[str, np.ndarray]


class FakeModel:
    """y = 2x, with a configurable delay; records every batch it ran and how many ran at once."""

    def __init__(self, delay_s: float = 0.0, fail_if: Callable[[Feeds], bool] | None = None) -> None:
        self.delay_s = delay_s
        self.fail_if = fail_if
        self.batches: list[int] = []
        self.running = 0
        self.max_running = 0

    async def __call__(self, feeds: Feeds) -> Feeds:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.batches.append(int(feeds["x"].shape[0]))
            if self.fail_if is not None and self.fail_if(feeds):
                raise RuntimeError("model exploded")
            return {"y": feeds["x"] * 2}
        finally:
            self.running -= 1


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


async def _started(model: FakeModel, **policy: Any) -> tuple[DynamicBatcher, list[BatchStats]]:
    stats: list[BatchStats] = []
    batchable = policy.pop("batchable", True)
    batcher = DynamicBatcher(model, BatchPolicy(**policy), batchable=batchable, on_batch=stats.append, name="fake")
    await batcher.start()
    return batcher, stats


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    async def main() -> None:
        model = FakeModel(delay_s=0.01)
        batcher, stats = await _started(model, max_batch_size=8, max_queue_delay_ms=20)
        inputs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(20)]
        results = await asyncio.gather(*(batcher.submit({"x": x}) for x in inputs))
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs["y"], x * 2)
            assert result.batch_size <= 8 and result.queue_ms >= 0
        assert sum(model.batches) == sum(x.shape[0] for x in inputs)
        assert max(model.batches) <= 8 and len(model.batches) < 20
        assert [s.rows for s in stats] == model.batches and all(s.ok for s in stats)
        await batcher.close()

    run(main)


def test_requests_with_different_non_batch_shapes_are_not_mixed() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher, stats = await _started(model, max_batch_size=16, max_queue_delay_ms=20)
        shapes = [(1, 4), (1, 5), (1, 4), (1, 5), (1, 4)]
        results = await asyncio.gather(*(batcher.submit({"x": np.zeros(s, np.float32)}) for s in shapes))
        assert [r.outputs["y"].shape for r in results] == shapes
        assert sorted(s.rows for s in stats) == [2, 3]  # one batch per shape
        await batcher.close()

    run(main)


def test_a_lone_request_waits_at_most_the_queue_delay() -> None:
    async def main() -> None:
        batcher, _ = await _started(FakeModel(), max_batch_size=8, max_queue_delay_ms=30)
        t0 = time.perf_counter()
        result = await batcher.submit({"x": np.ones((1, 2), np.float32)})
        waited = (time.perf_counter() - t0) * 1000
        assert 25 <= result.queue_ms <= 30 + 200 and waited >= 25
        await batcher.close()
        patient, _ = await _started(FakeModel(), max_batch_size=8, max_queue_delay_ms=1000)
        full = await asyncio.gather(*(patient.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(8)))
        assert full[0].batch_size == 8 and max(r.queue_ms for r in full) < 500  # a full batch does not wait
        await patient.close()

    run(main)


def test_preferred_batch_size_dispatches_early() -> None:
    async def main() -> None:
        batcher, stats = await _started(FakeModel(), max_batch_size=16, max_queue_delay_ms=500,
                                        preferred_batch_sizes=(4,))
        t0 = time.perf_counter()
        await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(4)))
        assert time.perf_counter() - t0 < 0.4 and stats[0].rows == 4
        await batcher.close()

    run(main)


def test_full_queue_is_429_with_retry_after() -> None:
    async def main() -> None:
        model = FakeModel(delay_s=0.05)
        batcher, _ = await _started(model, max_batch_size=1, max_queue_size=3)
        results = await asyncio.gather(
            *(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(10)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, ServeError)]
        assert refused and all(r.status == 429 and r.headers["Retry-After"] == "1" for r in refused)
        assert 3 <= len(results) - len(refused) <= 4  # the queue, plus the one being dispatched
        await batcher.close()

    run(main)


def test_timeout_is_504_and_the_abandoned_request_is_not_run() -> None:
    async def main() -> None:
        model = FakeModel(delay_s=0.2)
        batcher, _ = await _started(model, max_batch_size=1, timeout_s=0.05)
        results = await asyncio.gather(
            *(batcher.submit({"x": np.full((1, 2), i, np.float32)}) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, ServeError) and r.status == 504 for r in results)
        await asyncio.sleep(0.3)
        assert len(model.batches) == 1  # only the one already running ran; the queued ones were dropped
        assert batcher.depth == 0
        await batcher.close()

    run(main)


def test_a_failing_request_fails_alone() -> None:
    async def main() -> None:
        model = FakeModel(fail_if=lambda feeds: bool((feeds["x"] < 0).any()))
        batcher, stats = await _started(model, max_batch_size=8, max_queue_delay_ms=20)
        values = [1, 2, -1, 3]
        results = await asyncio.gather(
            *(batcher.submit({"x": np.full((1, 2), v, np.float32)}) for v in values), return_exceptions=True
        )
        bad = results[2]
        assert isinstance(bad, ServeError) and bad.status == 500 and "model exploded" in str(bad)
        assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 2)
        assert model.batches == [4, 1, 1, 1, 1]  # the batch failed, then each request ran alone
        assert [s.ok for s in stats] == [False, True, True, False, True]
        await batcher.close()

    run(main)


def test_batches_in_flight_follow_the_concurrency() -> None:
    async def main() -> None:
        for concurrency in (1, 3):
            model = FakeModel(delay_s=0.03)
            batcher, _ = await _started(model, max_batch_size=2, max_queue_delay_ms=1, concurrency=concurrency)
            await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(12)))
            assert model.max_running == concurrency
            await batcher.close()

    run(main)


def test_unbatched_models_run_one_request_at_a_time_whatever_its_rows() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher, _ = await _started(model, max_batch_size=8, batchable=False)
        assert not batcher.batching
        await asyncio.gather(*(batcher.submit({"x": np.ones((n, 2), np.float32)}) for n in (1, 3, 12)))
        assert sorted(model.batches) == [1, 3, 12]
        await batcher.close()

    run(main)


def test_bad_requests_and_a_closed_batcher() -> None:
    async def main() -> None:
        batcher, _ = await _started(FakeModel(), max_batch_size=4)
        with pytest.raises(ServeError, match="exceeds this model's max batch size 4") as exc:
            await batcher.submit({"x": np.ones((5, 2), np.float32)})
        assert exc.value.status == 400
        with pytest.raises(ServeError, match="same first"):
            await batcher.submit({"x": np.ones((2, 2), np.float32), "z": np.ones((3, 2), np.float32)})
        await batcher.close()
        with pytest.raises(ServeError) as exc:
            await batcher.submit({"x": np.ones((1, 2), np.float32)})
        assert exc.value.status == 503

    run(main)


def test_outputs_without_a_batch_axis_cannot_be_split() -> None:
    async def scalar(feeds: Feeds) -> Feeds:
        return {"total": np.array(feeds["x"].sum())}

    async def main() -> None:
        batcher = DynamicBatcher(scalar, BatchPolicy(max_batch_size=8, max_queue_delay_ms=20))
        await batcher.start()
        results = await asyncio.gather(
            *(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(2)), return_exceptions=True
        )
        # the batch of two fails to split, then each runs alone and succeeds
        assert all(not isinstance(r, Exception) and float(r.outputs["total"]) == 2.0 for r in results)
        await batcher.close()

    run(main)


def test_policy_validation() -> None:
    for bad in ({"max_batch_size": -1}, {"max_queue_delay_ms": -1}, {"max_queue_size": 0},
                {"concurrency": 0}, {"timeout_s": 0}):
        with pytest.raises(UserError):
            BatchPolicy(**bad)
    assert BatchPolicy().to_dict()["max_batch_size"] == 8


def test_close_while_a_batch_is_filling_finishes_every_accepted_request() -> None:
    async def main() -> None:
        model = FakeModel(delay_s=0.02)
        # a long queue delay: at close the dispatcher holds a batch that is still filling
        batcher, _ = await _started(model, max_batch_size=64, max_queue_delay_ms=2000, timeout_s=10)
        tasks = [asyncio.create_task(batcher.submit({"x": np.full((1, 2), i, np.float32)})) for i in range(40)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 0  # every request is in the filling batch, none in the queue
        started = time.perf_counter()
        await batcher.close(drain_s=5)
        assert time.perf_counter() - started < 1.0  # closing dispatches at once, without the queue delay
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [float(r.outputs["y"][0, 0]) for r in results] == [2.0 * i for i in range(40)]  # type: ignore[union-attr]
        with pytest.raises(ServeError, match="not accepting requests") as exc:
            await batcher.submit({"x": np.ones((1, 2), np.float32)})
        assert exc.value.status == 503

    run(main)


def test_close_under_load_answers_every_accepted_request_and_refuses_the_rest() -> None:
    """20 clients send 10 requests each; the batcher closes midway (as an unload does)."""

    async def main() -> None:
        model = FakeModel(delay_s=0.01)
        batcher, _ = await _started(model, max_batch_size=8, max_queue_delay_ms=30, concurrency=2, timeout_s=10)
        answered: list[Any] = []

        async def client(c: int) -> None:
            for i in range(10):
                try:
                    answered.append(await batcher.submit({"x": np.full((1, 2), c * 100 + i, np.float32)}))
                except ServeError as exc:
                    answered.append(exc)

        clients = [asyncio.create_task(client(c)) for c in range(20)]
        while len(answered) < 50:
            await asyncio.sleep(0.001)
        await batcher.close(drain_s=5)
        await asyncio.wait_for(asyncio.gather(*clients), 5)  # nobody waits for a 504
        errors = [r for r in answered if isinstance(r, ServeError)]
        assert len(answered) == 200 and len(errors) <= 200 - 50
        assert all(e.status == 503 and "not accepting requests" in str(e) for e in errors)  # refused, not dropped

    run(main)


def test_a_drain_that_runs_out_of_time_answers_the_rest_503() -> None:
    async def main() -> None:
        model = FakeModel(delay_s=0.2)
        batcher, _ = await _started(model, max_batch_size=1, timeout_s=10)
        tasks = [asyncio.create_task(batcher.submit({"x": np.ones((1, 2), np.float32)})) for _ in range(5)]
        await asyncio.sleep(0.05)
        await batcher.close(drain_s=0.3)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
        done = [r for r in results if not isinstance(r, BaseException)]
        late = [r for r in results if isinstance(r, ServeError)]
        assert len(done) + len(late) == 5 and 1 <= len(done) <= 2
        assert all(e.status == 503 and "shutting down" in str(e) for e in late)

    run(main)


def test_policy_values_are_bounded() -> None:
    for bad in ({"max_batch_size": 10**20}, {"max_queue_delay_ms": float("inf")}, {"max_queue_size": 10**20},
                {"concurrency": 10**9}, {"timeout_s": float("inf")}, {"timeout_s": float("nan")}):
        with pytest.raises(UserError, match="must be") as exc:
            BatchPolicy(**bad)
        assert "\n" not in str(exc.value) and len(str(exc.value)) < 200
