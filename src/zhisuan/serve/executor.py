"""Executors run already-batched inputs of one package version: in this process, in replicas, on Ray.

The server only knows the :class:`Executor` protocol, and makes each version's executor with an
:class:`ExecutorFactory` it is given (as an httpx client is given a transport):
:func:`make_executor` picks the engine by default; :class:`zhisuan.serve.testing.MockEngine`
answers from a function, for tests without a model runtime.
:class:`InProcessExecutor` keeps one runner in this process and calls its ``run`` in a thread
pool (ONNX Runtime and OpenVINO release the GIL while they compute, so the event loop keeps
decoding requests meanwhile). Several replicas (:class:`zhisuan.serve.workers.ReplicaPool`) and
Ray Serve (:class:`zhisuan.serve.ray_engine.RayExecutor`) implement the same protocol.

>>> executor = make_executor(package, replicas=1, threads=2)  # doctest: +SKIP
>>> outputs = await executor.infer({"x": batch})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.config import Engine

if TYPE_CHECKING:
    from zhisuan.serve.package import Package

__all__ = ["ENGINES", "Engine", "Executor", "ExecutorFactory", "InProcessExecutor", "make_executor"]

ENGINES = tuple(Engine)


@runtime_checkable
class Executor(Protocol):
    """Runs already-batched inputs of ONE package version (raw model inputs and outputs)."""

    package: Package

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def state(self) -> dict[str, Any]: ...  # {"replicas": n, "alive": k, "restarts": r, ...}

    @property
    def ready(self) -> bool: ...

    async def close(self) -> None: ...


class ExecutorFactory(Protocol):
    """Makes the executor of one package version; :func:`make_executor` is the real one.

    The options are the server's (:class:`~zhisuan.serve.config.ServerConfig`); a factory may
    ignore those that do not apply to it. An executor with an ``async start()`` is started
    before it takes batches.
    """

    def __call__(
        self,
        package: Package,
        *,
        replicas: int,
        engine: Engine,
        runtime: str | None,
        threads: int | None,
        concurrency: int,
        request_timeout_s: float,
    ) -> Executor: ...


class InProcessExecutor:
    """One runner of the package in this process; ``run`` happens on ``concurrency`` threads.

    The runner is loaded in the constructor (checksums verified by the package), so a broken
    model fails at start-up, not on the first request.
    """

    def __init__(
        self,
        package: Package,
        *,
        runtime: str | None = None,
        threads: int | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise UserError(f"executor concurrency must be >= 1, not {concurrency}")
        self.package = package
        self._runner = package.open_runner(runtime=runtime, threads=threads)
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"zhisuan-{package.name}-v{package.version}"
        )
        self._lock = threading.Lock()
        self._calls = 0
        self._failures = 0
        self._closed = False
        self.concurrency = concurrency

    @property
    def runner(self) -> Any:
        return self._runner

    @property
    def ready(self) -> bool:
        return not self._closed

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise UserError(f"{self.package.name} v{self.package.version} is unloaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self._calls += 1
        try:
            return self._runner.run(feeds)
        except BaseException:
            with self._lock:
                self._failures += 1
            raise

    def state(self) -> dict[str, Any]:
        info = self._runner.info
        return {
            "engine": "local",
            "replicas": 1,
            "alive": 0 if self._closed else 1,
            "restarts": 0,
            "calls": self._calls,
            "failures": self._failures,
            "runtime": info.runtime,
            "provider": info.provider,
            "threads": info.intra_op_threads,
            "concurrency": self.concurrency,
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._pool.shutdown, True)
        self._runner.close()


def make_executor(
    package: Package,
    *,
    replicas: int = 1,
    engine: Engine | str = Engine.LOCAL,
    runtime: str | None = None,
    threads: int | None = None,
    concurrency: int = 1,
    request_timeout_s: float = 30.0,
) -> Executor:
    """The executor for ``engine`` and ``replicas`` (see the module docstring).

    ``concurrency`` is how many batches the in-process executor runs at once; replica pools and
    Ray take one batch per replica. ``request_timeout_s`` is the server's request timeout: the
    longest a replica pool or Ray waits for one batch (a replica pool replica still busy after
    it is stuck, and restarted); the in-process executor leaves timing out to the batcher.
    """
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    engine = Engine(engine)
    if replicas < 1:
        raise UserError(f"replicas must be >= 1, not {replicas}")
    if engine is Engine.RAY:
        try:
            from zhisuan.serve.ray_engine import RayExecutor
        except ModuleNotFoundError as exc:
            if exc.name != "zhisuan.serve.ray_engine":
                raise
            raise UserError("the ray engine is not part of this zhisuan build; use --engine local") from None

        return RayExecutor(package, replicas=replicas, runtime=runtime, threads=threads,
                           request_timeout_s=request_timeout_s)
    if replicas > 1:
        from zhisuan.serve.workers import ReplicaPool

        return ReplicaPool(package, replicas=replicas, runtime=runtime, threads=threads,
                           request_timeout_s=request_timeout_s)
    return InProcessExecutor(package, runtime=runtime, threads=threads, concurrency=concurrency)
