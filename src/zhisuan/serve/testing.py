"""Serving without a model runtime: executors that answer from a function and record what they ran.

As httpx's ``MockTransport`` replaces the network with a function, :class:`MockEngine` replaces
the executors: give it to :func:`~zhisuan.serve.server.create_app` as ``executor_factory`` and
every model version is "run" by ``handler(call)``, where ``call`` is the :class:`ExecutorCall`
(model, version, batched feeds). The rest of the server is real: repository, signature checks,
pre/post-processing, batching, rollouts, metrics, HTTP.

>>> def handler(call: ExecutorCall) -> dict[str, np.ndarray]:
...     return {"y": call.feeds["x"] * 2}
>>> engine = MockEngine(handler)
>>> app = create_app(ServerConfig(repo="models"), executor_factory=engine)  # doctest: +SKIP
>>> engine.calls[0].model, engine.calls[0].feeds["x"].shape  # doctest: +SKIP
('mm', (3, 4))
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import UserError

if TYPE_CHECKING:
    from zhisuan.serve.package import Package

__all__ = ["ExecutorCall", "MockEngine", "MockExecutor"]


@dataclass(frozen=True)
class ExecutorCall:
    """One batch an executor was asked to run."""

    model: str
    version: int
    feeds: Mapping[str, np.ndarray]


Handler = Callable[[ExecutorCall], Mapping[str, np.ndarray]]


class MockExecutor:
    """An :class:`~zhisuan.serve.executor.Executor` of one package version that answers with ``handler``.

    What ``handler`` raises is what the executor raises (a failing backend); ``ready`` can be set
    to False to play a version that is not ready.
    """

    def __init__(self, package: Package, handler: Handler, *, record: Callable[[ExecutorCall], None]) -> None:
        self.package = package
        self.ready = True
        self.closed = False
        self._handler = handler
        self._record = record
        self._calls = 0
        self._failures = 0

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.closed:
            raise UserError(f"{self.package.name} v{self.package.version} is unloaded")
        call = ExecutorCall(self.package.name, self.package.version, dict(feeds))
        self._record(call)
        self._calls += 1
        try:
            return dict(self._handler(call))
        except BaseException:
            self._failures += 1
            raise

    def state(self) -> dict[str, Any]:
        return {
            "engine": "mock",
            "replicas": 1,
            "alive": 0 if self.closed else 1,
            "restarts": 0,
            "calls": self._calls,
            "failures": self._failures,
        }

    async def close(self) -> None:
        self.closed = True
        self.ready = False


class MockEngine:
    """An :class:`~zhisuan.serve.executor.ExecutorFactory` of :class:`MockExecutor` s sharing one handler.

    ``calls`` holds every batch run, in order, across versions; ``executors`` the executor made
    for each ``(model, version)`` (the latest, when a version was loaded again); ``options`` the
    server options each was made with.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[ExecutorCall] = []
        self.executors: dict[tuple[str, int], MockExecutor] = {}
        self.options: dict[tuple[str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()  # executors are made in worker threads

    def __call__(self, package: Package, **options: Any) -> MockExecutor:
        executor = MockExecutor(package, self.handler, record=self._record)
        with self._lock:
            key = (package.name, package.version)
            self.executors[key] = executor
            self.options[key] = options
        return executor

    def _record(self, call: ExecutorCall) -> None:
        with self._lock:
            self.calls.append(call)
