"""A pool of model replicas in worker processes on one machine (SPEC SRV-6).

Each replica is a fresh interpreter (:mod:`zhisuan.serve.children.workers_replica`) that loads
the package itself (checksums verified in the worker) and runs one batch at a time. The parent talks to it over a
pipe with a small framing of its own: a JSON header naming each tensor's dtype and shape, then
each tensor's raw bytes, received straight into a numpy array (string tensors element by element,
``str`` elements coming back as ``str`` and ``bytes`` as ``bytes``). Nothing that travels is pickled,
so no request-derived data is ever unpickled. Jobs wait in one shared queue, so an idle replica
takes the next batch (least-loaded by construction).

A replica that dies (a crash, the OOM killer, ``kill -9``) is seen at once (its pipe closes) and
started again; the batch it was running goes back to the front of the queue and runs on the
next free replica, up to ``max_retries`` times, so accepted requests are not lost. A replica
still busy with one batch when ``request_timeout_s`` (the server's ``--timeout-s``) has passed is
taken to be stuck (a stopped process, a deadlock): it is killed and restarted, and that batch
fails with :class:`TimeoutError`. :meth:`ReplicaPool.state` counts it under ``stuck`` (not
``alive``) from then until its replacement has loaded the model; a batch that is merely slow
but within the timeout runs to the end.

>>> pool = ReplicaPool(package, replicas=2, threads=2)  # doctest: +SKIP
>>> await pool.start()  # doctest: +SKIP
>>> outputs = await pool.infer({"x": batch})  # doctest: +SKIP
>>> pool.state()["alive"]  # doctest: +SKIP
2
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import mmap
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan._child import child_command, child_env
from zhisuan.device.cpu import usable_cpus
from zhisuan.errors import UserError, ZhisuanError

if TYPE_CHECKING:
    from zhisuan.serve.package import Package

__all__ = ["ReplicaError", "ReplicaPool", "decode_tensors", "encode_tensors"]

_START_TIMEOUT_S = 180.0  # loading a large model on a busy machine can take a while
_STOP_TIMEOUT_S = 5.0
_MAX_HEADER_BYTES = 1 << 20
_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # between restarts of a replica that keeps dying
# Batches with at least this many bytes of numeric input go through shared memory: the parent
# copies them once into pages the replica maps, instead of pushing them through the socket.
_SHM_MIN_BYTES = 1 << 18
_ALIGN = 64
_NUMERIC = frozenset({
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64",
})
# element-wise tensors: raw bytes elements, and UTF-8 text elements that come back as str
_BYTES, _TEXT = "bytes", "text"
_VARIABLE = frozenset({_BYTES, _TEXT})


class ReplicaError(ZhisuanError):
    """A batch could not be run because its replica died (more often than the retries allow)."""


# --- the wire format: JSON header + raw little-endian tensor bytes, no pickle --------------------


def _describe(name: str, array: np.ndarray) -> tuple[dict[str, Any], Any]:
    if array.dtype.kind in ("O", "S", "U"):
        # Each element as a 4-byte little-endian length and its bytes (as the v2 protocol does). Text
        # stays text: ONNX string tensors are str, and a runtime given bytes would keep their repr.
        flat = array.reshape(-1)
        text = array.dtype.kind == "U" or (array.dtype.kind == "O" and all(isinstance(i, str) for i in flat))
        parts = []
        for item in flat:
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        payload = b"".join(parts)
        dtype = _TEXT if text else _BYTES
        return {"name": name, "dtype": dtype, "shape": list(array.shape), "nbytes": len(payload)}, payload
    if array.dtype.name not in _NUMERIC:
        raise UserError(f"tensor {name!r} has dtype {array.dtype.name}, which replicas cannot exchange")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    array = np.asarray(array, order="C")  # not ascontiguousarray: that turns a 0-d scalar into shape [1]
    flat = array.reshape(-1).view(np.uint8)
    return {"name": name, "dtype": array.dtype.name, "shape": list(array.shape), "nbytes": int(flat.nbytes)}, flat


def encode_tensors(tensors: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Tensor descriptions and their raw buffers (no copies for contiguous numeric arrays)."""
    described = [_describe(name, np.asarray(value)) for name, value in tensors.items()]
    return [d for d, _ in described], [b for _, b in described]


def _check_description(desc: Any) -> tuple[str, str, tuple[int, ...], int]:
    if not isinstance(desc, dict) or not set(desc) <= {"name", "dtype", "shape", "nbytes", "offset"}:
        raise ValueError("tensor description is not an object of name, dtype, shape, nbytes (offset)")
    name, dtype, shape, nbytes = desc.get("name"), desc.get("dtype"), desc.get("shape"), desc.get("nbytes")
    if not isinstance(name, str) or dtype not in _NUMERIC | _VARIABLE or not isinstance(shape, list) \
            or not all(isinstance(d, int) and d >= 0 for d in shape) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"bad tensor description {desc!r}")
    if dtype not in _VARIABLE and nbytes != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
        raise ValueError(f"tensor {name!r}: {nbytes} bytes do not fit {dtype} {shape}")
    return name, dtype, tuple(shape), nbytes


def _decode_bytes(payload: bytes | memoryview, shape: tuple[int, ...], *, text: bool = False) -> np.ndarray:
    """An object array of the elements of ``payload``: ``bytes``, or ``str`` when ``text``."""
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(count, dtype=object)
    view, offset = memoryview(payload), 0
    for i in range(count):
        if offset + 4 > len(view):
            raise ValueError("BYTES tensor is shorter than its element count")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise ValueError("BYTES element runs past the end of the tensor")
        element = bytes(view[offset : offset + size])
        out[i] = element.decode("utf-8") if text else element  # bad UTF-8: UnicodeDecodeError, a ValueError
        offset += size
    if offset != len(view):
        raise ValueError("BYTES tensor has trailing bytes")
    return out.reshape(shape)


def decode_tensors(descriptions: list[dict[str, Any]], payload: bytes | memoryview) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_tensors` for buffers laid end to end in ``payload``."""
    view, offset, out = memoryview(payload), 0, {}
    for desc in descriptions:
        name, dtype, shape, nbytes = _check_description(desc)
        if offset + nbytes > len(view):
            raise ValueError("payload is shorter than its tensors")
        chunk = view[offset : offset + nbytes]
        offset += nbytes
        if dtype in _VARIABLE:
            out[name] = _decode_bytes(chunk, shape, text=dtype == _TEXT)
        else:
            out[name] = np.frombuffer(chunk, dtype=np.dtype(dtype)).reshape(shape)
    if offset != len(view):
        raise ValueError("payload has bytes after its tensors")
    return out


def frame(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """One self-contained message: 4-byte header length, JSON header (with ``tensors``), raw buffers."""
    descriptions, buffers = encode_tensors(tensors)
    head = json.dumps({**header, "tensors": descriptions}).encode("utf-8")
    return b"".join([struct.pack("<I", len(head)), head, *(bytes(memoryview(b)) for b in buffers)])


def unframe(message: bytes | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`frame`; raises ``ValueError`` on a malformed message."""
    view = memoryview(message)
    if len(view) < 4:
        raise ValueError("message is too short")
    (size,) = struct.unpack_from("<I", view, 0)
    if size > _MAX_HEADER_BYTES or 4 + size > len(view):
        raise ValueError("bad header length")
    header = json.loads(bytes(view[4 : 4 + size]).decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise ValueError("header is not an object with tensors")
    return header, decode_tensors(header["tensors"], view[4 + size :])


class SharedBuffer:
    """Anonymous shared memory (``memfd``) that the parent fills and a replica maps.

    The file descriptor goes to the replica once, over a second socket (``SCM_RIGHTS``); there
    is no name in ``/dev/shm`` to leak if a process dies.
    """

    def __init__(self, size: int, fd: int | None = None) -> None:
        self.size = size
        self.fd = fd if fd is not None else os.memfd_create("zhisuan-batch", os.MFD_CLOEXEC)
        if fd is None:
            os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)

    def array(self, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset < 0 or offset % _ALIGN or end > self.size:
            raise ValueError(f"shared tensor [{offset}, {end}) is outside the {self.size}-byte buffer")
        return np.ndarray(shape, dtype=dtype, buffer=self.map, offset=offset)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def send_message(
    conn: Connection,
    header: dict[str, Any],
    tensors: dict[str, np.ndarray] | None = None,
    shared: SharedBuffer | None = None,
) -> None:
    """Send a header and tensors; numeric tensors go into ``shared`` when one is given."""
    descriptions, buffers = encode_tensors(tensors or {})
    if shared is not None:
        offset, piped = 0, []
        for desc, buffer in zip(descriptions, buffers, strict=True):
            if desc["dtype"] in _VARIABLE:
                piped.append(buffer)
                continue
            np.copyto(np.frombuffer(shared.map, dtype=np.uint8, count=desc["nbytes"], offset=offset), buffer)
            desc["offset"] = offset
            offset += _aligned(desc["nbytes"])
        buffers = piped
    conn.send_bytes(json.dumps({**header, "tensors": descriptions}).encode("utf-8"))
    for buffer in buffers:
        conn.send_bytes(buffer)


def read_header(conn: Connection) -> dict[str, Any]:
    header = json.loads(conn.recv_bytes(_MAX_HEADER_BYTES).decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("tensors", []), list):
        raise ValueError("bad message header")
    return header


def read_tensors(conn: Connection, header: dict[str, Any], shared: SharedBuffer | None) -> dict[str, np.ndarray]:
    """The tensors a header describes: views of ``shared`` or bytes read from ``conn``."""
    tensors = {}
    for desc in header.get("tensors", []):
        name, dtype, shape, nbytes = _check_description(desc)
        if "offset" in desc:
            if shared is None or dtype in _VARIABLE or not isinstance(desc["offset"], int):
                raise ValueError(f"tensor {name!r} is in shared memory that this end does not have")
            tensors[name] = shared.array(desc["offset"], shape, np.dtype(dtype))
            continue
        if dtype in _VARIABLE:
            tensors[name] = _decode_bytes(conn.recv_bytes(), shape, text=dtype == _TEXT)
            continue
        array = np.empty(shape, dtype=np.dtype(dtype))
        if nbytes == 0:
            conn.recv_bytes()
        else:
            got = conn.recv_bytes_into(array.reshape(-1).view(np.uint8))
            if got != nbytes:
                raise ValueError(f"tensor {name!r}: got {got} bytes, expected {nbytes}")
        tensors[name] = array
    return tensors


def _recv(conn: Connection) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    header = read_header(conn)
    return header, read_tensors(conn, header, None)


def _shared_bytes(feeds: dict[str, np.ndarray]) -> int:
    return sum(_aligned(np.asarray(a).nbytes) for a in feeds.values() if np.asarray(a).dtype.kind not in "OSU")


# --- the parent side -----------------------------------------------------------------------------

_REPLICA = "zhisuan.serve.children.workers_replica"  # the program each replica process runs


@dataclass
class _Job:
    id: int
    feeds: dict[str, np.ndarray]
    future: concurrent.futures.Future[dict[str, np.ndarray]]
    deadline: float
    attempts: int = 0


@dataclass
class _Slot:
    index: int
    process: Any = None
    conn: Connection | None = None
    pid: int | None = None
    alive: bool = False
    starts: int = 0
    job: _Job | None = None
    thread: threading.Thread | None = None
    failures_in_a_row: int = 0
    returncode: int | None = None
    fd_channel: socket.socket | None = None
    shared: SharedBuffer | None = None
    generation: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    busy_since: float | None = None  # monotonic time its batch went to the replica
    stuck: bool = False  # its batch ran past the request timeout; cleared once its replacement is ready


class ReplicaPool:
    """N worker processes of one package version; implements the server's ``Executor`` protocol."""

    def __init__(
        self,
        package: Package,
        *,
        replicas: int,
        runtime: str | None = None,
        threads: int | None = None,
        request_timeout_s: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise UserError(f"replicas must be an integer >= 1, got {replicas!r}")
        if threads is not None and threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        if request_timeout_s <= 0:
            raise UserError(f"request timeout must be > 0 s, got {request_timeout_s}")
        self.package = package
        self.replicas = replicas
        self.runtime = runtime
        total = threads if threads is not None else usable_cpus()
        self.threads_per_replica = max(1, total // replicas)
        self.request_timeout_s = float(request_timeout_s)
        self.max_retries = max_retries
        self._slots = [_Slot(i) for i in range(replicas)]
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._ids = 0
        self._closed = False
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._fatal: str | None = None
        self._counts = {"restarts": 0, "retries": 0, "calls": 0, "failures": 0, "timeouts": 0, "stuck": 0}
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"ReplicaPool({self.package.name!r} v{self.package.version}, replicas={self.replicas})"

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every replica and wait until each has loaded the model (a load failure raises)."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            await asyncio.to_thread(self._start_blocking)

    def _start_blocking(self) -> None:
        if self._closed:
            raise UserError(f"{self!r} is closed")
        ready = threading.Barrier(self.replicas + 1)
        for slot in self._slots:
            slot.thread = threading.Thread(
                target=self._slot_loop, args=(slot, ready), daemon=True,
                name=f"zhisuan-replica-{self.package.name}-v{self.package.version}-{slot.index}",
            )
            slot.thread.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            ready.wait(timeout=_START_TIMEOUT_S + 5)
        if self._fatal is not None or not any(s.alive for s in self._slots):
            reason = self._fatal or "no replica started in time"
            self._shutdown()
            raise UserError(f"{self.package.name} v{self.package.version}: replicas could not load the model: {reason}")
        self._started = True

    async def close(self) -> None:
        """Fail queued batches, stop every replica (kill after a grace period), join the threads."""
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            _fail(job, ReplicaError(f"{self.package.name} v{self.package.version} was unloaded"))
        # Each replica's thread stops its own process when it sees the pool closed; one still busy
        # after the grace period (a long batch, a slow start) has its process killed, which frees it.
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for slot in self._slots:
            process = slot.process
            if slot.thread is not None and slot.thread.is_alive() and process is not None:
                with contextlib.suppress(OSError):
                    process.kill()
                slot.thread.join(timeout=_STOP_TIMEOUT_S)
            elif slot.thread is None:
                self._stop_process(slot)

    # -- requests ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._started and not self._closed and self._healthy() > 0

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (already batched) set of model inputs on the next free replica."""
        if not self._started:
            await self.start()
        if self._closed:
            raise ReplicaError(f"{self.package.name} v{self.package.version} is unloaded")
        future: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
        with self._cond:
            self._ids += 1
            job = _Job(self._ids, feeds, future, time.monotonic() + self.request_timeout_s)
            self._queue.append(job)
            self._cond.notify()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.request_timeout_s)
        except TimeoutError:
            future.cancel()  # a replica that picks it up later skips it
            with self._cond:
                self._counts["timeouts"] += 1
            raise TimeoutError(
                f"{self.package.name} v{self.package.version}: no result within {self.request_timeout_s:g} s"
            ) from None

    def _is_stuck(self, slot: _Slot, now: float) -> bool:
        busy = slot.busy_since
        return slot.stuck or (busy is not None and now - busy > self.request_timeout_s)

    def _healthy(self) -> int:
        now = time.monotonic()
        return sum(1 for s in self._slots if s.alive and not self._is_stuck(s, now))

    def state(self) -> dict[str, Any]:
        """Counts for health and metrics: ``alive`` replicas take batches; ``stuck`` ones ran one
        batch past the request timeout and are being replaced (``stuck_restarts``: how many so far)."""
        with self._cond:
            running = sum(1 for s in self._slots if s.job is not None)
            now = time.monotonic()
            return {
                "engine": "local-replicas",
                "replicas": self.replicas,
                "alive": self._healthy(),
                "stuck": sum(1 for s in self._slots if self._is_stuck(s, now)),
                "stuck_restarts": self._counts["stuck"],
                "request_timeout_s": self.request_timeout_s,
                "restarts": self._counts["restarts"],
                "in_flight": running + len(self._queue),
                "running": running,
                "queued": len(self._queue),
                "retries": self._counts["retries"],
                "calls": self._counts["calls"],
                "failures": self._counts["failures"],
                "timeouts": self._counts["timeouts"],
                "threads_per_replica": self.threads_per_replica,
                "pids": [s.pid if s.alive else None for s in self._slots],
                "last_error": self._last_error,
            }

    def pids(self) -> list[int | None]:
        """Process ids of the replicas (None for one that is restarting)."""
        return [s.pid if s.alive else None for s in self._slots]

    # -- one thread per replica -------------------------------------------------------------------

    def _slot_loop(self, slot: _Slot, ready: threading.Barrier) -> None:
        first = True
        while not self._closed:
            if not slot.alive:
                if not first:
                    delay = _BACKOFF_S[min(slot.failures_in_a_row, len(_BACKOFF_S) - 1)]
                    with self._cond:
                        self._cond.wait_for(lambda: self._closed, timeout=delay)
                    if self._closed:
                        break
                ok = self._spawn(slot)
                if first:
                    first = False
                    with contextlib.suppress(threading.BrokenBarrierError):
                        ready.wait(timeout=_START_TIMEOUT_S + 5)
                if not ok:
                    if self._fatal is not None and not self._started:
                        return  # the model does not load at all: start() reports it
                    slot.failures_in_a_row += 1
                    continue
            job = self._next_job()
            if job is not None:
                self._run_job(slot, job)
            elif slot.process is not None and slot.process.poll() is not None:
                # died while idle: nothing was lost, start it again
                self._last_error = f"replica {slot.index} (pid {slot.pid}) exited while idle " \
                    f"(exit {slot.process.returncode}); restarting"
                self._stop_process(slot, kill=True)
        self._stop_process(slot)

    def _next_job(self) -> _Job | None:
        """The next job to run, or None after a short idle wait (so the caller can check its replica)."""
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait(timeout=0.25)
            while self._queue and not self._closed:
                job = self._queue.popleft()
                if not job.future.done() and time.monotonic() < job.deadline:
                    return job
                _fail(job, TimeoutError("the request timed out while queued"))  # its caller has gone
        return None

    def _spawn(self, slot: _Slot) -> bool:
        # A fresh interpreter, like multiprocessing's "spawn", but started with subprocess: spawn
        # re-imports the parent's __main__ in the child, which re-runs an unguarded script (or
        # `python -m zhisuan serve` itself). The socket pair is the only descriptor it inherits.
        mine, theirs = socket.socketpair()
        fd_mine, fd_theirs = socket.socketpair()  # for shared-memory descriptors (SCM_RIGHTS)
        args = child_command(_REPLICA, str(theirs.fileno()), str(fd_theirs.fileno()), str(self.package.path),
                             self.runtime or "", str(self.threads_per_replica))
        try:
            process = subprocess.Popen(args, pass_fds=(theirs.fileno(), fd_theirs.fileno()), stdin=subprocess.DEVNULL,
                                       env=child_env())
        except OSError as exc:
            self._last_error = f"replica {slot.index} could not start: {exc}"
            for sock in (mine, theirs, fd_mine, fd_theirs):
                sock.close()
            return False
        theirs.close()  # so that our end sees EOF when the child dies
        fd_theirs.close()
        slot.fd_channel, slot.shared, slot.generation = fd_mine, None, 0
        conn = Connection(mine.detach())
        slot.process, slot.conn, slot.pid = process, conn, process.pid
        slot.starts += 1
        try:
            if not conn.poll(_START_TIMEOUT_S):
                raise EOFError(f"the replica did not load within {_START_TIMEOUT_S:g} s")
            header, _ = _recv(conn)
        except (EOFError, OSError, ValueError) as exc:
            self._last_error = f"replica {slot.index} failed to start (exit {process.poll()}): {exc}"
            self._stop_process(slot, kill=True)
            return False
        if header.get("type") != "ready":
            self._fatal = str(header.get("message", "unknown error"))
            self._last_error = f"replica {slot.index}: {self._fatal}"
            self._stop_process(slot)
            return False
        slot.info = header.get("info", {})
        slot.alive, slot.stuck = True, False
        slot.failures_in_a_row = 0
        if slot.starts > 1:
            with self._cond:
                self._counts["restarts"] += 1
        return True

    def _run_job(self, slot: _Slot, job: _Job) -> None:
        assert slot.conn is not None and slot.process is not None
        with self._cond:
            slot.job = job
            self._counts["calls"] += 1
        header: dict[str, Any] = {}
        outputs: dict[str, np.ndarray] = {}
        problem: BaseException | None = None
        timed_out = False
        try:
            header = {"type": "run", "id": job.id}
            shared = self._shared_for(slot, _shared_bytes(job.feeds))
            if shared is not None:
                header["shm"] = {"generation": slot.generation, "size": shared.size}
            send_message(slot.conn, header, job.feeds, shared)
            slot.busy_since = time.monotonic()
            # A replica is stuck when ONE batch runs for the whole request timeout (the time a batch
            # waited in the queue does not count against the replica). A dead replica closes its
            # end of the socket: poll() returns and recv raises EOFError.
            if slot.conn.poll(self.request_timeout_s):
                header, outputs = _recv(slot.conn)
            else:
                timed_out = True
        except UserError as exc:  # the batch cannot be encoded: the caller's mistake
            problem = exc
        except (EOFError, OSError, ValueError) as exc:
            problem = exc
        finally:
            with self._cond:
                slot.job = None  # before the caller hears back, so state() never counts a finished batch
                slot.busy_since = None
                slot.stuck = timed_out  # until its replacement is ready
        if timed_out:
            self._timeout(slot, job)
        elif isinstance(problem, UserError):
            _fail(job, problem)
        elif problem is not None:
            self._replica_died(slot, job, problem)
        elif header.get("id") != job.id:
            self._replica_died(slot, job, ValueError(f"reply for job {header.get('id')}, expected {job.id}"))
        elif header.get("type") == "result":
            _resolve(job, outputs)
        else:
            with self._cond:
                self._counts["failures"] += 1
            message = str(header.get("message"))
            _fail(job, UserError(message) if header.get("kind") == "user" else ReplicaError(f"replica {slot.index}: {message}"))

    def _shared_for(self, slot: _Slot, nbytes: int) -> SharedBuffer | None:
        """The replica's shared input buffer, grown (and its descriptor sent) when ``nbytes`` needs it."""
        if nbytes < _SHM_MIN_BYTES or slot.fd_channel is None:
            return None
        if slot.shared is None or slot.shared.size < nbytes:
            size = 1 << (nbytes - 1).bit_length()  # the next power of two: few regrowths
            grown = SharedBuffer(size)
            socket.send_fds(slot.fd_channel, [b"m"], [grown.fd])
            if slot.shared is not None:
                slot.shared.close()
            slot.shared, slot.generation = grown, slot.generation + 1
        return slot.shared

    def _timeout(self, slot: _Slot, job: _Job) -> None:
        # Still busy after the whole request timeout: the replica is stuck. Restart it.
        self._last_error = f"replica {slot.index} ran one batch for over {self.request_timeout_s:g} s; restarted"
        with self._cond:
            self._counts["timeouts"] += 1
            self._counts["stuck"] += 1
        _fail(job, TimeoutError(f"{self.package.name} v{self.package.version}: batch ran over {self.request_timeout_s:g} s"))
        self._stop_process(slot, kill=True)

    def _replica_died(self, slot: _Slot, job: _Job, exc: BaseException) -> None:
        self._stop_process(slot, kill=True)
        code = slot.returncode
        self._last_error = f"replica {slot.index} (pid {slot.pid}) died while running a batch (exit {code}): {type(exc).__name__} {exc}".rstrip()
        job.attempts += 1
        if job.attempts > self.max_retries or job.future.done() or self._closed:
            with self._cond:
                self._counts["failures"] += 1
            _fail(job, ReplicaError(f"{self.package.name} v{self.package.version}: {self._last_error}; "
                                    f"gave up after {job.attempts} attempts"))
            return
        with self._cond:
            self._counts["retries"] += 1
            self._queue.appendleft(job)  # first in line for the next free replica
            self._cond.notify()

    def _stop_process(self, slot: _Slot, *, kill: bool = False) -> None:
        slot.alive = False
        process, conn = slot.process, slot.conn
        slot.process, slot.conn = None, None
        if process is None:
            return
        if not kill and conn is not None and process.poll() is None:
            with contextlib.suppress(Exception):
                send_message(conn, {"type": "stop"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_STOP_TIMEOUT_S)
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_TIMEOUT_S)
        slot.returncode = process.returncode
        if conn is not None:
            conn.close()
        if slot.fd_channel is not None:
            slot.fd_channel.close()
        if slot.shared is not None:
            slot.shared.close()
        slot.fd_channel, slot.shared, slot.generation = None, None, 0


def _resolve(job: _Job, outputs: dict[str, np.ndarray]) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if not job.future.done():
            job.future.set_result(outputs)


def _fail(job: _Job, exc: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if not job.future.done():
            job.future.set_exception(exc)

