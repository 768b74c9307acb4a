"""The inference server: Open Inference Protocol v2 over HTTP (FastAPI), batching, gray release.

:func:`create_app` builds the ASGI app; its lifespan loads every model version of the
repository (or the named models) into a :class:`~zhisuan.serve.hub.ModelHub`: per version a
package, an executor and a dynamic batcher, and per model a :class:`~zhisuan.serve.rollout.Rollout`.
The hub holds that state (:mod:`zhisuan.serve.hub`); the HTTP handlers that parse requests, call
it and answer are :mod:`zhisuan.serve.routes`. :func:`run_server` is what ``zhisuan serve`` calls.

Executors are made by the ``executor_factory`` given to :func:`create_app` / :func:`run_server`
(default: :func:`~zhisuan.serve.executor.make_executor`): tests pass a
:class:`~zhisuan.serve.testing.MockEngine` to serve without a model runtime.

Endpoints (v2 = the Open Inference Protocol; Triton's repository extension; zhisuan's rollout):

- ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``
- ``GET /v2/models/{m}[/versions/{v}]``, ``GET .../ready``, ``POST .../infer`` (JSON or binary tensors)
- ``POST /v2/repository/index``, ``POST /v2/repository/models/{m}/load|unload`` (bearer token)
- ``GET|POST /v2/zhisuan/rollout/{m}``, ``POST .../promote``, ``POST .../rollback`` (bearer token)
- ``GET /metrics`` (Prometheus)

Client input never makes it crash or answer 500: bad requests get a 4xx JSON ``{"error": ...}``.

>>> app = create_app(ServerConfig(repo="models"))  # doctest: +SKIP
>>> run_server(ServerConfig(repo="models", port=8000))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from zhisuan import __version__
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.serve.config import ServerConfig
from zhisuan.serve.executor import ExecutorFactory, make_executor
from zhisuan.serve.hub import LoadedVersion, ModelHub

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["EXTENSIONS", "SERVER_NAME", "LoadedVersion", "ModelHub", "ServerConfig", "bind_socket", "create_app", "run_server"]

SERVER_NAME = "zhisuan"
#: the Open Inference Protocol extensions the server implements (as ``GET /v2`` lists them)
EXTENSIONS = ("binary_tensor_data", "model_repository", "zhisuan_rollout")


def create_app(config: ServerConfig, *, executor_factory: ExecutorFactory = make_executor) -> FastAPI:
    """The ASGI app; its lifespan loads the models and starts telemetry (see the module docstring)."""
    from fastapi import FastAPI

    from zhisuan.serve import routes

    hub = ModelHub(config, executor_factory=executor_factory)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not hub.started:
            await hub.start()
        try:
            yield
        finally:
            await hub.close()

    app = FastAPI(
        title="zhisuan inference server", version=__version__, lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.state.hub = hub
    app.state.config = config
    routes.install(app, hub, config)
    return app


# -------------------------------------------------------------------------------------------
# running it
# -------------------------------------------------------------------------------------------
def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; a port in use or not allowed is a one-line :class:`UserError`."""
    import errno

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it Nagle + delayed ACK add ~40 ms to every response with a body.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use on {host}; choose another with --port") from None
        if exc.errno == errno.EACCES:
            raise UserError(f"no permission to listen on port {port} (ports below 1024 need root)") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_server(
    config: ServerConfig,
    *,
    on_ready: Callable[[ModelHub, str], None] | None = None,
    progress: Progress = no_progress,
    log_level: str = "warning",
    executor_factory: ExecutorFactory = make_executor,
) -> None:
    """Load the models, then serve until interrupted (SIGINT/SIGTERM). What ``zhisuan serve`` runs.

    Models load before the port opens, so a broken package is a one-line error, not a traceback.
    ``on_ready(hub, url)`` is called once the server accepts connections; ``executor_factory``
    makes each model version's executor (see :func:`create_app`).
    """
    import signal

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn, minus re-raising the signal after its graceful shutdown: SIGINT and SIGTERM
        stop the server cleanly and ``zhisuan serve`` exits 0 (a second Ctrl-C forces the exit)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    app = create_app(config, executor_factory=executor_factory)
    hub: ModelHub = app.state.hub
    sock = bind_socket(config.host, config.port)

    async def main() -> None:
        await hub.start(progress)
        try:
            server = GracefulServer(uvicorn.Config(
                app, lifespan="off", log_level=log_level, access_log=False, timeout_keep_alive=30,
                timeout_graceful_shutdown=max(5, int(config.request_timeout_s)),
            ))
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in str(host) else host
            serve = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serve.done():
                await asyncio.sleep(0.02)
            if server.started and on_ready is not None:
                on_ready(hub, f"http://{shown}:{port}")
            await serve
        finally:
            await hub.close()

    try:
        asyncio.run(main())
    finally:
        sock.close()
