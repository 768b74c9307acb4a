"""The replica pool: correct results, a replica killed under load, restarts, timeouts, the wire format."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from package_models import matmul_model, mlp_model, mlp_reference

from zhisuan.errors import UserError
from zhisuan.serve.package import Package, pack
from zhisuan.serve.workers import ReplicaError, ReplicaPool, decode_tensors, encode_tensors, frame, unframe


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Package, Path]:
    root = tmp_path_factory.mktemp("mlp")
    model = mlp_model(root / "mlp.onnx")
    return pack(model, root / "pkg"), model


def _expected(x: np.ndarray, model: Path) -> np.ndarray:
    return mlp_reference(x, model).astype(np.float32)


async def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_two_replicas_give_correct_results_and_share_the_work(mlp: tuple[Package, Path]) -> None:
    package, model = mlp

    async def main() -> dict:
        pool = ReplicaPool(package, replicas=2, threads=2)
        assert not pool.ready
        await pool.start()
        try:
            assert pool.ready and pool.threads_per_replica == 1
            pids = pool.pids()
            assert len(set(pids)) == 2 and os.getpid() not in pids
            inputs = [np.random.default_rng(i).standard_normal((1 + i % 5, 256)).astype(np.float32) for i in range(40)]
            results = await asyncio.gather(*(pool.infer({"x": x}) for x in inputs))
            for x, out in zip(inputs, results, strict=True):
                assert set(out) == {"y"} and out["y"].dtype == np.float32 and out["y"].shape == x.shape
                np.testing.assert_allclose(out["y"], _expected(x, model), rtol=1e-4, atol=1e-5)
            with pytest.raises(UserError, match="is float64, the model takes float32"):
                await pool.infer({"x": np.zeros((1, 256))})
            state = pool.state()
        finally:
            await pool.close()
        assert not pool.ready
        return state

    state = asyncio.run(main())
    assert state["replicas"] == 2 and state["alive"] == 2 and state["restarts"] == 0
    assert state["calls"] == 41 and state["failures"] == 1 and state["in_flight"] == 0


def test_large_batches_travel_through_shared_memory(mlp: tuple[Package, Path]) -> None:
    package, model = mlp
    sizes = [3, 600, 300, 4000, 1000]  # 3 KB by socket; 600 KB, 4 MB through a shared buffer that grows

    async def main() -> tuple[list[dict[str, np.ndarray]], dict]:
        pool = ReplicaPool(package, replicas=1, threads=1)
        await pool.start()
        try:
            outs = [await pool.infer({"x": np.full((n, 256), n / 4000, dtype=np.float32)}) for n in sizes]
            slot = pool._slots[0]
            assert slot.shared is not None and slot.shared.size == 1 << 22 and slot.generation == 2
            return outs, pool.state()
        finally:
            await pool.close()

    outs, state = asyncio.run(main())
    for n, out in zip(sizes, outs, strict=True):
        row = _expected(np.full((1, 256), n / 4000, dtype=np.float32), model)
        assert out["y"].shape == (n, 256)
        np.testing.assert_allclose(out["y"], np.broadcast_to(row, (n, 256)), rtol=1e-4, atol=1e-5)
    assert state["failures"] == 0 and state["restarts"] == 0


def test_a_replica_killed_under_load_loses_no_request(mlp: tuple[Package, Path]) -> None:
    package, model = mlp

    async def main() -> tuple[list[bool], dict, dict]:
        # 300 queued batches on a busy 2-core machine can take over the default 30 s to drain:
        # this test is about the killed replica's batch, not about timeouts
        pool = ReplicaPool(package, replicas=2, threads=2, request_timeout_s=180)
        await pool.start()
        try:
            victim = pool.pids()[0]

            # every row of a request is the same, so one reference row per distinct value will do
            rows = {k: _expected(np.full((1, 256), k / 17.0, dtype=np.float32), model) for k in range(17)}

            async def one(i: int) -> bool:
                x = np.full((512, 256), (i % 17) / 17.0, dtype=np.float32)  # ~10 ms a batch
                out = await pool.infer({"x": x})
                return out["y"].shape == x.shape and bool(np.allclose(out["y"], rows[i % 17], rtol=1e-4, atol=1e-5))

            tasks = [asyncio.create_task(one(i)) for i in range(300)]
            await _wait_for(lambda: pool.state()["running"] == 2 and pool.state()["queued"] > 20)
            os.kill(victim, signal.SIGKILL)
            answers = await asyncio.gather(*tasks)
            during = pool.state()
            await _wait_for(lambda: pool.state()["alive"] == 2)
            after = pool.state()
            assert victim not in pool.pids()
            return answers, during, after
        finally:
            await pool.close()

    answers, during, after = asyncio.run(main())
    assert len(answers) == 300 and all(answers)  # every accepted request answered, correctly
    assert during["retries"] >= 1  # the batch the victim was running ran again elsewhere
    assert after["restarts"] == 1 and after["alive"] == 2 and after["failures"] == 0
    assert "died while running a batch (exit -9)" in after["last_error"]


def test_a_replica_that_dies_idle_is_restarted(mlp: tuple[Package, Path]) -> None:
    package, _ = mlp

    async def main() -> dict:
        pool = ReplicaPool(package, replicas=2, threads=2)
        await pool.start()
        try:
            os.kill(pool.pids()[1], signal.SIGKILL)
            await _wait_for(lambda: pool.state()["restarts"] == 1 and pool.state()["alive"] == 2)
            out = await pool.infer({"x": np.zeros((2, 256), dtype=np.float32)})
            assert out["y"].shape == (2, 256)
            return pool.state()
        finally:
            await pool.close()

    state = asyncio.run(main())
    assert state["retries"] == 0 and "exited while idle" in state["last_error"]


def test_retries_are_bounded_and_stuck_replicas_are_restarted(tmp_path: Path) -> None:
    slow = pack(mlp_model(tmp_path / "slow.onnx", width=512, layers=48), tmp_path / "pkg")
    x = np.ones((8192, 512), dtype=np.float32)  # ~200 GFLOP, ~1 s here: longer than the timeout below

    async def main() -> None:
        pool = ReplicaPool(slow, replicas=1, threads=1, max_retries=0, request_timeout_s=60)
        await pool.start()
        try:
            task = asyncio.create_task(pool.infer({"x": x}))
            await _wait_for(lambda: pool.state()["running"] == 1)
            os.kill(pool.pids()[0], signal.SIGKILL)
            with pytest.raises(ReplicaError, match="gave up after 1 attempts"):
                await task
            await _wait_for(lambda: pool.ready)
        finally:
            await pool.close()

        pool = ReplicaPool(slow, replicas=1, threads=1, request_timeout_s=0.2)
        await pool.start()
        try:
            first = pool.pids()[0]
            with pytest.raises(TimeoutError):
                await pool.infer({"x": x})
            await _wait_for(lambda: pool.ready and pool.pids()[0] not in (None, first))
            assert pool.state()["timeouts"] >= 1 and pool.state()["restarts"] == 1
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_package_that_fails_to_load_in_the_replica_is_reported(tmp_path: Path) -> None:
    package = pack(matmul_model(tmp_path / "m.onnx"), tmp_path / "pkg")
    model = package.path / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")  # changed after the server opened the package

    async def main() -> None:
        pool = ReplicaPool(package, replicas=2)
        with pytest.raises(UserError, match=r"replicas could not load the model: .*sha256"):
            await pool.start()
        assert not pool.ready

    asyncio.run(main())


def test_closing_fails_queued_work_and_is_idempotent(mlp: tuple[Package, Path]) -> None:
    package, _ = mlp

    async def main() -> None:
        pool = ReplicaPool(package, replicas=1, threads=1)
        await pool.start()
        await pool.close()
        await pool.close()
        with pytest.raises(ReplicaError, match="unloaded"):
            await pool.infer({"x": np.zeros((1, 256), dtype=np.float32)})

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match="replicas must be"):
        ReplicaPool(object(), replicas=0)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="threads must be"):
        ReplicaPool(object(), replicas=2, threads=0)  # type: ignore[arg-type]


def test_wire_format_round_trip_without_pickle() -> None:
    tensors = {
        "f": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # not contiguous
        "i": np.array([[1, -2]], dtype=np.int64),
        "b": np.array([True, False]),
        "h": np.array([1.5], dtype=np.float16),
        "empty": np.zeros((0, 5), dtype=np.uint8),
        "s": np.array([[b"ab", b""], [b"\x00\xff", "z\u00e9".encode()]], dtype=object),
        "t": np.array([["ab", ""], ["z\u00e9", "\u4e2d"]], dtype=object),  # text stays str (ONNX strings)
        "u": np.array(["x", "yz"]),
        "scalar": np.array(7, dtype=np.int32),
        "be": np.array([1.0, 2.0], dtype=">f8"),
    }
    header, out = unframe(frame({"id": 3}, tensors))
    assert header["id"] == 3
    for name, value in tensors.items():
        assert out[name].shape == value.shape
        if name in ("s", "t", "u"):
            assert out[name].dtype == object and out[name].tolist() == value.tolist()
            assert all(isinstance(a, str) == isinstance(b, str) for a, b in zip(out[name].flat, value.flat, strict=True))
        else:
            np.testing.assert_array_equal(out[name], value)
            assert out[name].dtype == value.dtype.newbyteorder("=")
    descriptions, buffers = encode_tensors({"x": np.ones(3, dtype=np.float32)})
    assert json.loads(json.dumps(descriptions)) == descriptions  # headers are plain JSON
    np.testing.assert_array_equal(decode_tensors(descriptions, b"".join(bytes(b) for b in buffers))["x"], np.ones(3))
    with pytest.raises(UserError, match="cannot exchange"):
        encode_tensors({"c": np.zeros(2, dtype=np.complex64)})
    message = frame({}, {"x": np.ones(4, dtype=np.float32)})
    for broken in (message[:-1], message + b"\x00", message[:3], b"\xff\xff\xff\x7f" + message[4:]):
        with pytest.raises(ValueError):
            unframe(broken)
    text = frame({}, {"t": np.array(["ok"], dtype=object)})
    with pytest.raises(ValueError):  # text that is not UTF-8
        unframe(text.replace(b"ok", b"\xff\xfe"))
    evil = json.dumps({"tensors": [{"name": "x", "dtype": "object", "shape": [1], "nbytes": 8}]}).encode()
    with pytest.raises(ValueError, match="bad tensor description"):
        unframe(len(evil).to_bytes(4, "little") + evil + b"\x80\x04N." + b"\x00" * 4)
