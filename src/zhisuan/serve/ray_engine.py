"""The same model runner as a Ray Serve deployment, for scale-out across machines (SPEC SRV-6).

:class:`RayExecutor` implements the server's ``Executor`` protocol: the zhisuan server keeps
its HTTP front end, batching and rollout, and sends each batch through a Ray Serve
``DeploymentHandle`` to one of ``replicas`` replicas, which may live on any node of the Ray
cluster. Each replica runs :meth:`~zhisuan.serve.package.Package.open_runner` exactly as a
local replica does.

The package travels through Ray's object store (its files, read and checksummed here), and each
replica writes it to a private temporary directory and opens it with
:func:`~zhisuan.serve.package.load_package`, which verifies every sha256 again: nodes need no
shared filesystem. Batches travel in the replica pool's framing (JSON header + raw tensor bytes,
:func:`zhisuan.serve.workers.frame`), so what Ray carries for a request is a plain ``bytes``
object. A replica that dies is restarted by Ray Serve's controller; the batch it was running is
retried on another replica (``max_retries``).

``ray[serve]`` is an optional extra (``pip install "zhisuan[ray]"``) and is imported only when an
executor starts. Without ``address`` (or ``RAY_ADDRESS``) a local Ray instance is started and
stopped with the executor.

>>> executor = RayExecutor(package, replicas=2, threads=2)  # doctest: +SKIP
>>> await executor.start()  # doctest: +SKIP
>>> outputs = await executor.infer({"x": batch})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import BackendUnavailableError, UserError
from zhisuan.serve.workers import ReplicaError, frame, unframe

if TYPE_CHECKING:
    from zhisuan.serve.package import Package

__all__ = ["INSTALL_HINT", "RayExecutor", "ray_available"]

INSTALL_HINT = 'pip install "zhisuan[ray]"  (ray[serve])'
_STATUS_PERIOD_S = 2.0
_counter = itertools.count(1)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.serve") is not None


def _require_ray() -> None:
    if not ray_available():
        raise BackendUnavailableError("ray[serve]", "the ray engine needs Ray Serve, which is not installed", INSTALL_HINT)


class _RayReplica:
    """The body of one Ray Serve replica: the package's runner behind a bytes-in, bytes-out method."""

    def __init__(self, files: list[Any], runtime: str | None, threads: int | None) -> None:
        import ray

        from zhisuan.serve.package import load_package

        contents: dict[str, bytes] = ray.get(files[0])  # nested in a list: Serve does not resolve it for us
        self._dir = Path(tempfile.mkdtemp(prefix="zhisuan-ray-package-"))
        root = self._dir / "package"
        for rel, data in contents.items():
            if rel.startswith("/") or ".." in rel.split("/"):
                raise UserError(f"refusing package file path {rel!r}")
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self._package = load_package(root)  # verifies every sha256 on this node
        self._runner = self._package.open_runner(runtime=runtime, threads=threads)
        self._lock = threading.Lock()  # one batch at a time: an OpenVINO request is not thread-safe
        self._who = {"pid": os.getpid(), "host": socket.gethostname()}

    def infer(self, message: bytes) -> bytes:
        try:
            header, feeds = unframe(message)
        except ValueError as exc:
            return frame({"type": "error", "kind": "internal", "message": f"bad message: {exc}", **self._who}, {})
        try:
            with self._lock:
                outputs = self._runner.run(feeds)
        except UserError as exc:
            return frame({"type": "error", "kind": "user", "message": str(exc), **self._who}, {})
        except Exception as exc:
            return frame({"type": "error", "kind": "internal", "message": f"{type(exc).__name__}: {exc}", **self._who}, {})
        return frame({"type": "result", "id": header.get("id"), **self._who}, outputs)

    def describe(self) -> dict[str, Any]:
        return {**self._who, "runtime": self._runner.info.to_dict()}

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            shutil.rmtree(self._dir, ignore_errors=True)


class RayExecutor:
    """``replicas`` Ray Serve replicas of one package version, called through a DeploymentHandle."""

    def __init__(
        self,
        package: Package,
        *,
        replicas: int,
        runtime: str | None = None,
        threads: int | None = None,
        address: str | None = None,
        request_timeout_s: float = 30.0,
        max_retries: int = 2,
        num_cpus_per_replica: float | None = None,
        quiet: bool = True,
    ) -> None:
        _require_ray()
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise UserError(f"replicas must be an integer >= 1, got {replicas!r}")
        if threads is not None and threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        self.package = package
        self.replicas = replicas
        self.runtime = runtime
        total = threads if threads is not None else (os.cpu_count() or 1)
        self.threads_per_replica = max(1, total // replicas)
        self.num_cpus_per_replica = float(num_cpus_per_replica if num_cpus_per_replica is not None
                                          else self.threads_per_replica)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.request_timeout_s = float(request_timeout_s)
        self.max_retries = max_retries
        slug = re.sub(r"[^A-Za-z0-9_-]", "-", package.name)
        self.app_name = f"zhisuan-{slug}-v{package.version}-{os.getpid()}-{next(_counter)}"
        self._handle: Any = None
        self._owns_ray = False
        self._closed = False
        self._start_lock: asyncio.Lock | None = None
        self._status: dict[str, Any] = {"alive": 0, "deployment_status": "NOT_STARTED"}
        self._status_task: asyncio.Task[None] | None = None
        self._seen: set[tuple[str, int]] = set()
        self._counts = {"calls": 0, "failures": 0, "retries": 0, "timeouts": 0}
        self._ids = itertools.count(1)
        self._last_error: str | None = None
        self._files_ref: Any = None
        self._quiet = quiet

    def __repr__(self) -> str:
        return f"RayExecutor({self.package.name!r} v{self.package.version}, replicas={self.replicas})"

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to (or start) Ray, deploy the replicas and wait until they are running."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._handle is not None:
                return
            if self._closed:
                raise UserError(f"{self!r} is closed")
            await asyncio.to_thread(self._start_blocking)
            self._refresh_status()
            self._status_task = asyncio.create_task(self._watch_status())

    def _start_blocking(self) -> None:
        import ray
        from ray import serve

        if self._quiet:
            # Serve's router logs a warning whenever a replica answers a queue-length probe late,
            # which on a busy CPU is often; our server reports replica state in /metrics instead.
            logging.getLogger("ray.serve").setLevel(logging.ERROR)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "namespace": "zhisuan"}
            if self.address is None:
                kwargs["num_cpus"] = max(os.cpu_count() or 1, int(self.replicas * self.num_cpus_per_replica + 0.999))
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as exc:
                raise UserError(f"cannot start or reach Ray ({self.address or 'local'}): {exc}") from None
            self._owns_ray = True
        files = {rel: (self.package.path / rel).read_bytes() for rel in (*self.package.manifest.checksums, "manifest.json")}
        self._files_ref = ray.put(files)
        serve.start(proxy_location="Disabled")  # requests come through our server, not Ray's HTTP proxy
        deployment = serve.deployment(
            _RayReplica,
            name=f"{self.package.name}-v{self.package.version}",
            num_replicas=self.replicas,
            ray_actor_options={"num_cpus": self.num_cpus_per_replica},
            max_ongoing_requests=2,  # one running, one arriving: overlaps transfer with compute
        )
        try:
            self._handle = serve.run(
                deployment.bind([self._files_ref], self.runtime, self.threads_per_replica),
                name=self.app_name, route_prefix=None, blocking=False,
            )
        except Exception as exc:
            self._stop_blocking()
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UserError(f"Ray Serve could not deploy {self.package.name} v{self.package.version}: {first}") from None

    async def close(self) -> None:
        """Delete the deployment; stop Ray too when this executor started it."""
        if self._closed:
            return
        self._closed = True
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        await asyncio.to_thread(self._stop_blocking)

    def _stop_blocking(self) -> None:
        import ray
        from ray import serve

        self._handle = None
        if ray.is_initialized():
            with contextlib.suppress(Exception):
                serve.delete(self.app_name)
            if self._owns_ray:
                with contextlib.suppress(Exception):
                    serve.shutdown()
                ray.shutdown()
                self._owns_ray = False

    # -- requests ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._handle is not None and not self._closed and self._status.get("alive", 0) >= 1

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (already batched) set of model inputs on a Ray Serve replica."""
        if self._handle is None:
            await self.start()
        if self._closed:
            raise ReplicaError(f"{self.package.name} v{self.package.version} is unloaded")
        from ray import exceptions as ray_errors

        message = frame({"id": next(self._ids)}, feeds)
        deadline = time.monotonic() + self.request_timeout_s
        attempt = 0
        while True:
            self._counts["calls"] += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._counts["timeouts"] += 1
                raise TimeoutError(f"{self.package.name} v{self.package.version}: no result within {self.request_timeout_s:g} s")
            try:
                reply = await asyncio.wait_for(self._handle.infer.remote(message), remaining)
                break
            except TimeoutError:
                self._counts["timeouts"] += 1
                raise TimeoutError(
                    f"{self.package.name} v{self.package.version}: no result within {self.request_timeout_s:g} s"
                ) from None
            except (ray_errors.RayActorError, ray_errors.ActorUnavailableError) as exc:
                # the replica died (or is restarting) with our batch: run it again elsewhere
                attempt += 1
                self._last_error = f"a Ray replica failed while running a batch: {type(exc).__name__}"
                if attempt > self.max_retries:
                    self._counts["failures"] += 1
                    raise ReplicaError(f"{self.package.name} v{self.package.version}: {self._last_error}; "
                                       f"gave up after {attempt} attempts") from None
                self._counts["retries"] += 1
        header, outputs = unframe(reply)
        self._seen.add((str(header.get("host")), int(header.get("pid", 0))))
        if header.get("type") == "result":
            return outputs
        self._counts["failures"] += 1
        if header.get("kind") == "user":
            raise UserError(str(header.get("message")))
        raise ReplicaError(f"Ray replica pid {header.get('pid')}: {header.get('message')}")

    def state(self) -> dict[str, Any]:
        return {
            "engine": "ray",
            "replicas": self.replicas,
            "alive": self._status.get("alive", 0),
            # Serve restarts replicas itself and does not count them; replicas seen answering beyond
            # the first ``replicas`` are replacements.
            "restarts": max(0, len(self._seen) - self.replicas),
            "deployment_status": self._status.get("deployment_status"),
            "replica_states": self._status.get("replica_states", {}),
            "calls": self._counts["calls"],
            "failures": self._counts["failures"],
            "retries": self._counts["retries"],
            "timeouts": self._counts["timeouts"],
            "threads_per_replica": self.threads_per_replica,
            "app": self.app_name,
            "last_error": self._last_error,
        }

    def _refresh_status(self) -> None:
        from ray import serve

        try:
            app = serve.status().applications.get(self.app_name)
        except Exception as exc:  # the controller is restarting or gone: report, do not raise
            self._status = {"alive": 0, "deployment_status": f"UNKNOWN ({type(exc).__name__})"}
            return
        if app is None:
            self._status = {"alive": 0, "deployment_status": "NOT_FOUND"}
            return
        deployments = list(app.deployments.values())
        states: dict[str, int] = {}
        for d in deployments:
            for state, count in d.replica_states.items():
                states[str(state)] = states.get(str(state), 0) + int(count)
        self._status = {
            "alive": states.get("RUNNING", 0),
            "deployment_status": str(deployments[0].status.value) if deployments else str(app.status.value),
            "replica_states": states,
        }

    async def _watch_status(self) -> None:
        while not self._closed:
            await asyncio.sleep(_STATUS_PERIOD_S)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._refresh_status)

    async def describe_replicas(self) -> list[dict[str, Any]]:
        """Each reachable replica's pid, host and runtime (one call per replica, best effort)."""
        if self._handle is None:
            return []
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for _ in range(self.replicas * 4):
            info = await self._handle.describe.remote()
            found[(info["host"], info["pid"])] = info
            if len(found) >= self.replicas:
                break
        return list(found.values())
