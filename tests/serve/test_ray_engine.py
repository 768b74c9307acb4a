"""The Ray Serve engine: the same runner on Ray Serve replicas, a replica killed under load.

Ray takes ~10 s to start and ~5 s to stop here, so one executor serves every test of the module
(session-scoped), on one event loop running in a background thread. Skipped cleanly when
``ray[serve]`` is not installed; the missing-Ray error is tested without Ray.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from package_models import matmul_model, mlp_model, mlp_reference

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.serve.package import Package, pack


class _Loop:
    """One asyncio loop in a thread for the whole module: Ray handles stay bound to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="session")
def ray_mlp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, _Loop, Path]]:
    pytest.importorskip("ray.serve")
    from zhisuan.serve.ray_engine import RayExecutor

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster (FIELD-NOTES)
    root = tmp_path_factory.mktemp("ray")
    model = mlp_model(root / "mlp.onnx")
    package = pack(model, root / "pkg")
    loop = _Loop()
    executor = RayExecutor(package, replicas=2, threads=2, request_timeout_s=120)
    try:
        loop.run(executor.start())
        yield executor, loop, model
    finally:
        loop.run(executor.close())
        loop.stop()


@pytest.mark.slow
def test_ray_replicas_run_the_package_runner(ray_mlp: tuple[Any, _Loop, Path]) -> None:
    executor, loop, model = ray_mlp
    assert executor.ready
    replicas = loop.run(executor.describe_replicas())
    assert len({(r["host"], r["pid"]) for r in replicas}) == 2
    assert all(r["runtime"]["runtime"] == "onnxruntime" and r["runtime"]["intra_op_threads"] == 1 for r in replicas)
    assert os.getpid() not in {r["pid"] for r in replicas}

    async def many() -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        inputs = [np.random.default_rng(i).standard_normal((1 + i % 4, 256)).astype(np.float32) for i in range(20)]
        outputs = await asyncio.gather(*(executor.infer({"x": x}) for x in inputs))
        return list(zip(inputs, outputs, strict=True))

    for x, out in loop.run(many()):
        np.testing.assert_allclose(out["y"], mlp_reference(x, model), rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="is float64, the model takes float32"):
        loop.run(executor.infer({"x": np.zeros((1, 256))}))
    state = executor.state()
    assert state["engine"] == "ray" and state["replicas"] == 2 and state["alive"] == 2
    assert state["deployment_status"] == "HEALTHY" and state["failures"] == 1


@pytest.mark.slow
def test_ray_replica_killed_under_load_loses_no_request(ray_mlp: tuple[Any, _Loop, Path]) -> None:
    executor, loop, model = ray_mlp
    victim = loop.run(executor.describe_replicas())[0]["pid"]
    rows = {k: mlp_reference(np.full((1, 256), k / 13.0, dtype=np.float32), model) for k in range(13)}

    async def load() -> list[bool]:
        async def one(i: int) -> bool:
            x = np.full((512, 256), (i % 13) / 13.0, dtype=np.float32)
            out = await executor.infer({"x": x})
            return bool(np.allclose(out["y"], rows[i % 13], rtol=1e-4, atol=1e-5))

        tasks = [asyncio.create_task(one(i)) for i in range(150)]
        await asyncio.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        return await asyncio.gather(*tasks)

    answers = loop.run(load())
    assert len(answers) == 150 and all(answers)
    deadline = time.monotonic() + 90
    while True:  # Serve's controller starts a replacement
        replicas = {r["pid"] for r in loop.run(executor.describe_replicas())}
        if executor.state()["alive"] == 2 and len(replicas) == 2 and victim not in replicas:
            break
        assert time.monotonic() < deadline, executor.state()
        time.sleep(1)
    assert executor.state()["restarts"] >= 1


def test_missing_ray_is_a_one_line_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zhisuan.serve import ray_engine

    package: Package = pack(matmul_model(tmp_path / "m.onnx"), tmp_path / "pkg")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("ray") else real(name, *a))
    with pytest.raises(BackendUnavailableError, match=r"zhisuan\[ray\]"):
        ray_engine.RayExecutor(package, replicas=2)
