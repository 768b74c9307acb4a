"""The inference server: Open Inference Protocol v2 over HTTP (FastAPI), batching, gray release.

:func:`create_app` builds the ASGI app; its lifespan loads every model version of the
repository (or the named models) into a :class:`ModelHub`: per version a package, an executor
and a dynamic batcher, and per model a :class:`~zhisuan.serve.rollout.Rollout`.
:func:`run_server` is what ``zhisuan serve`` calls.

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
import hmac
import itertools
import logging
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan import __version__
from zhisuan.errors import UserError
from zhisuan.serve.batching import BatchPolicy, BatchStats, DynamicBatcher
from zhisuan.serve.config import TOKEN_ENV, ServerConfig
from zhisuan.serve.logs import RequestLog
from zhisuan.serve.metrics import CONTENT_TYPE, UNKNOWN, ServeMetrics, VersionState
from zhisuan.serve.protocol import (
    HEADER_LENGTH,
    InferRequest,
    ServeError,
    decode_infer_request,
    dumps,
    encode_infer_response,
    loads,
)
from zhisuan.serve.rollout import Rollout, parse_weights, with_policy_overrides

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    from zhisuan.serve.executor import Executor
    from zhisuan.serve.package import Package, TensorSig

__all__ = ["EXTENSIONS", "LoadedVersion", "ModelHub", "ServerConfig", "create_app", "run_server"]

log = logging.getLogger("zhisuan.serve")

SERVER_NAME = "zhisuan"
EXTENSIONS = ("binary_tensor_data", "model_repository", "zhisuan_rollout")
_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino", "tensorrt": "tensorrt_plan"}
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_JSON = "application/json"


# -------------------------------------------------------------------------------------------
# loaded models
# -------------------------------------------------------------------------------------------
@dataclass(eq=False)
class LoadedVersion:
    """One served model version: its package, executor and batcher, and a fast signature lookup."""

    package: Package
    executor: Executor
    batcher: DynamicBatcher
    policy: BatchPolicy
    inputs: dict[str, TensorSig] = field(default_factory=dict)
    output_names: frozenset[str] = frozenset()
    label: str = ""

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def version(self) -> int:
        return self.package.version

    @property
    def ready(self) -> bool:
        try:
            return bool(self.executor.ready)
        except Exception:  # an executor that cannot even say is not ready
            return False

    def metadata(self, versions: list[int]) -> dict[str, Any]:
        manifest = self.package.manifest
        return {
            "name": self.name,
            "versions": [str(v) for v in versions],
            "platform": _PLATFORMS.get(manifest.runtime, manifest.runtime),
            "inputs": [s.to_dict() for s in manifest.inputs],
            "outputs": [s.to_dict() for s in manifest.outputs],
        }

    def check(self, request: InferRequest) -> dict[str, np.ndarray]:
        """The request's inputs in signature order, after checking names, datatypes and shapes."""
        unknown = [n for n in request.inputs if n not in self.inputs]
        if unknown:
            raise ServeError(
                400, f"unknown input {unknown[0]!r}; {self.name} takes: {', '.join(self.inputs)}"
            )
        feeds: dict[str, np.ndarray] = {}
        for name, sig in self.inputs.items():
            arr = request.inputs.get(name)
            if arr is None:
                raise ServeError(400, f"missing input {name!r}; {self.name} takes: {', '.join(self.inputs)}")
            datatype = request.datatypes[name]
            if datatype != sig.datatype:
                raise ServeError(400, f"input {name!r} is {datatype} but {self.name} takes {sig.datatype}")
            if len(arr.shape) != len(sig.shape) or any(
                want >= 0 and got != want for got, want in zip(arr.shape, sig.shape, strict=True)
            ):
                raise ServeError(
                    400, f"input {name!r} has shape {list(arr.shape)} but {self.name} takes {list(sig.shape)} "
                    "(-1: any size)"
                )
            feeds[name] = _onnx_strings(arr, name) if sig.datatype == "BYTES" else arr
        for item in request.outputs:
            if item.name not in self.output_names:
                raise ServeError(
                    400, f"unknown output {item.name!r}; {self.name} gives: {', '.join(sorted(self.output_names))}"
                )
        return feeds


def _onnx_strings(arr: np.ndarray, name: str) -> np.ndarray:
    """BYTES elements as ``str``: ONNX string tensors are UTF-8 text, and runtimes given ``bytes``
    would pass on their ``repr``."""
    out = np.empty(arr.shape, dtype=object)
    flat, src = out.reshape(-1), arr.reshape(-1)
    try:
        for i, item in enumerate(src):
            flat[i] = item.decode() if isinstance(item, bytes) else str(item)
    except UnicodeDecodeError:
        raise ServeError(400, f"input {name!r} holds bytes that are not UTF-8; model strings are UTF-8 text") from None
    return out


class ModelHub:
    """Every loaded model version, its rollout, the metrics and the request log of one server."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.models: dict[str, dict[int, LoadedVersion]] = {}
        self.rollouts: dict[str, Rollout] = {}
        self.sampler: Any = None
        self.metrics = ServeMetrics(versions=self._version_states, rollout_weights=self._rollout_weights)
        self.request_log: RequestLog | None = None
        self.started = False
        self.repo: Any = None
        self._loading = asyncio.Lock()
        self._save_lock = threading.Lock()
        self._closing = False
        self._progress: Callable[[str], None] | None = None

    # start and stop ------------------------------------------------------------------------
    async def start(self, progress: Callable[[str], None] | None = None) -> None:
        """Open the repository, start telemetry, load the models (all of them, or the named ones).

        ``progress(text)`` is told which model version is loading (the CLI shows a spinner).
        """
        from zhisuan.serve.repository import Repository

        config = self.config
        self._closing = False
        if not config.repo.is_dir():
            raise UserError(f"model repository not found: {config.repo}")
        self.repo = Repository(config.repo, create=False)
        names = list(config.models) or self.repo.names()
        missing = [n for n in names if not self.repo.versions(n)]
        if missing:
            raise UserError(
                f"no model {missing[0]!r} in {config.repo} (models: {', '.join(self.repo.names()) or 'none'})"
            )
        if not names:
            raise UserError(f"the repository {config.repo} holds no models; add one with `zhisuan repo add`")
        if config.request_log:
            self.request_log = RequestLog(config.logs_path)
        if config.telemetry:
            self._start_telemetry()
        saved = self._read_rollout_state()
        self._progress = progress
        try:
            for name in names:
                await self.load(name, saved=saved.get(name))
        except BaseException:
            await self.close()
            raise
        finally:
            self._progress = None
        self.started = True

    def _start_telemetry(self) -> None:
        from zhisuan.device.prometheus import TelemetryCollector
        from zhisuan.device.telemetry import TelemetrySampler

        try:
            sampler = TelemetrySampler(interval_s=self.config.telemetry_interval_s, history=4)
            sampler.start()
            sampler.sample()  # a first reading now, so the first scrape already has one
        except UserError as exc:  # telemetry is an extra: the server runs without it
            log.warning("device telemetry is unavailable: %s", exc)
            return
        self.sampler = sampler
        self.metrics.registry.register(TelemetryCollector(sampler))  # type: ignore[arg-type]

    async def close(self) -> None:
        self._closing = True
        for name in list(self.models):
            await self._unload_versions(name, list(self.models.get(name, {})))
        self.models.clear()
        if self.sampler is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.sampler.stop)
            self.sampler = None
        if self.request_log is not None:
            self.request_log.close()
        self.started = False

    # loading -------------------------------------------------------------------------------
    async def load(self, name: str, *, saved: Mapping[str, Any] | None = None) -> list[int]:
        """Load the repository's versions of ``name`` that are not loaded; drop those it no longer has."""
        async with self._loading:
            versions = self.repo.versions(name)
            if not versions:
                raise ServeError(404, f"no model {name!r} in the repository {self.config.repo}")
            loaded = self.models.get(name, {})
            gone = [v for v in loaded if v not in versions]
            new = [v for v in versions if v not in loaded]
            fresh: dict[int, LoadedVersion] = {}
            try:
                for version in new:
                    fresh[version] = await self._load_version(name, version)
            except BaseException:
                for lv in fresh.values():
                    await self._close_version(lv)
                raise
            table = {**{v: lv for v, lv in loaded.items() if v not in gone}, **fresh}
            self.models[name] = dict(sorted(table.items()))
            rollout = self.rollouts.get(name)
            if rollout is None:
                rollout = self.rollouts[name] = Rollout(name, self.models[name])
                if saved:
                    rollout.restore(saved)
            else:
                rollout.set_versions(self.models[name], reason=f"loaded versions {new or 'none'}, dropped {gone or 'none'}")
            await self._unload_versions(name, gone, keep_entry=True)
            if new:
                log.info("loaded %s versions %s", name, ", ".join(map(str, new)))
            return new

    async def _load_version(self, name: str, version: int) -> LoadedVersion:
        from zhisuan.serve.executor import make_executor

        config = self.config
        if self._progress is not None:
            self._progress(f"loading {name} v{version} (verifying checksums, starting {config.replicas} "
                           f"{config.engine} replica(s))")
        package = await asyncio.to_thread(self.repo.package, name, version)
        executor = await asyncio.to_thread(
            make_executor, package, replicas=config.replicas, engine=config.engine,
            runtime=config.runtime, threads=config.threads, concurrency=config.batches_in_flight,
        )
        try:
            start = getattr(executor, "start", None)
            if start is not None:
                await start()
            policy = self._policy(package)
            label = str(version)
            batcher = DynamicBatcher(
                executor.infer, policy, batchable=policy.max_batch_size > 1, name=f"{name} v{version}",
                on_batch=self._batch_observer(name, label),
            )
            await batcher.start()
        except BaseException:
            await executor.close()
            raise
        manifest = package.manifest
        return LoadedVersion(
            package=package, executor=executor, batcher=batcher, policy=policy,
            inputs={s.name: s for s in manifest.inputs},
            output_names=frozenset(s.name for s in manifest.outputs), label=label,
        )

    def _policy(self, package: Package) -> BatchPolicy:
        config = self.config
        batching = package.manifest.batching
        max_batch = batching.max_batch_size
        if config.max_batch_size is not None:
            if max_batch > 1 or _batchable(package):
                max_batch = config.max_batch_size
            elif config.max_batch_size > 1:
                log.warning("%s v%s has no dynamic batch axis; it is served without batching",
                            package.name, package.version)
        delay = config.max_queue_delay_ms if config.max_queue_delay_ms is not None else batching.max_queue_delay_ms
        return BatchPolicy(
            max_batch_size=max_batch,
            max_queue_delay_ms=float(delay),
            preferred_batch_sizes=tuple(s for s in batching.preferred_batch_sizes if s <= max_batch),
            max_queue_size=config.max_queue_size,
            concurrency=config.batches_in_flight,
            timeout_s=config.request_timeout_s,
        )

    def _batch_observer(self, name: str, label: str) -> Callable[[BatchStats], None]:
        def observe(stats: BatchStats) -> None:
            self.metrics.observe_batch(name, label, stats.rows, stats.compute_ms / 1000.0)

        return observe

    async def unload(self, name: str) -> list[int]:
        async with self._loading:
            if name not in self.models:
                raise ServeError(404, f"model {name!r} is not loaded")
            versions = list(self.models[name])
            await self._unload_versions(name, versions)
            log.info("unloaded %s versions %s", name, ", ".join(map(str, versions)))
            return versions

    async def _unload_versions(self, name: str, versions: list[int], *, keep_entry: bool = False) -> None:
        table = self.models.get(name, {})
        closing = [table[v] for v in versions if v in table]
        for v in versions:
            table.pop(v, None)
        if not keep_entry and not table:
            self.models.pop(name, None)
            self.rollouts.pop(name, None)
        for lv in closing:
            await self._close_version(lv)

    async def _close_version(self, lv: LoadedVersion) -> None:
        await lv.batcher.close(drain_s=min(5.0, self.config.request_timeout_s))
        with contextlib.suppress(Exception):
            await lv.executor.close()

    # lookups -------------------------------------------------------------------------------
    def model(self, name: str) -> dict[int, LoadedVersion]:
        table = self.models.get(name)
        if not table:
            raise ServeError(404, f"unknown model {name[:100]!r}")
        return table

    def version(self, name: str, version: str | None, sticky: str | None = None) -> LoadedVersion:
        table = self.model(name)
        if version is None or version == "":
            return table[self.rollouts[name].choose(sticky)]
        try:
            lv = table.get(int(version))
        except ValueError:
            lv = None
        if lv is None:
            raise ServeError(
                404, f"model {name!r} has no loaded version {version[:20]!r} (loaded: {', '.join(map(str, table))})"
            )
        return lv

    def default_version(self, name: str) -> LoadedVersion:
        """The version metadata without a version describes: the rollout's heaviest, else the latest."""
        table = self.model(name)
        weights = self.rollouts[name].weights
        best = max(weights, key=lambda v: (weights[v], v)) if weights else max(table)
        return table.get(best) or table[max(table)]

    @property
    def ready(self) -> bool:
        return self.started and not self._closing and all(
            lv.ready for table in self.models.values() for lv in table.values()
        )

    # metrics sources -----------------------------------------------------------------------
    def _version_states(self) -> list[VersionState]:
        states = []
        for name, table in list(self.models.items()):
            for lv in list(table.values()):
                try:
                    executor_state = dict(lv.executor.state())
                except Exception as exc:  # a scrape must not fail because one executor does
                    executor_state = {"error": str(exc)}
                states.append(VersionState(name, lv.label, lv.ready, lv.batcher.depth, lv.batcher.in_flight,
                                           executor_state))
        return states

    def _rollout_weights(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, rollout in list(self.rollouts.items()):
            weights = rollout.weights
            out[name] = {str(v): weights.get(v, 0.0) for v in rollout.versions}
        return out

    # rollout state ---------------------------------------------------------------------------
    def _read_rollout_state(self) -> dict[str, Any]:
        path = self.config.rollout_state_path
        if not path.is_file():
            return {}
        try:
            data = loads(path.read_bytes())
        except (OSError, ServeError) as exc:
            log.warning("ignoring the saved rollout state %s: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def save_rollouts(self) -> None:
        """Persist every model's weights and policy (atomic write), in a worker thread."""
        from zhisuan._io import atomic_write_json

        def write() -> None:
            with self._save_lock:
                state = self._read_rollout_state()
                state.update({name: r.snapshot() for name, r in list(self.rollouts.items())})
                try:
                    atomic_write_json(self.config.rollout_state_path, state)
                except OSError as exc:
                    log.warning("could not save the rollout state: %s", exc)

        asyncio.get_running_loop().run_in_executor(None, write)


def _batchable(package: Package) -> bool:
    sig = package.model_signature
    tensors = [*sig["inputs"], *sig["outputs"]]
    return bool(tensors) and all(len(t.shape) >= 1 and t.shape[0] == -1 for t in tensors)


# -------------------------------------------------------------------------------------------
# the app
# -------------------------------------------------------------------------------------------
def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app; its lifespan loads the models and starts telemetry (see the module docstring)."""
    from fastapi import FastAPI
    from starlette.exceptions import HTTPException as StarletteHTTPException

    hub = ModelHub(config)

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

    async def http_error(_request: Any, exc: Any) -> Response:
        status = int(getattr(exc, "status_code", 500))
        detail = getattr(exc, "detail", None) or "error"
        return _error(ServeError(status, "not found" if status == 404 else str(detail)), None)

    app.add_exception_handler(StarletteHTTPException, http_error)
    _routes(app, hub, config)
    return app


def _routes(app: FastAPI, hub: ModelHub, config: ServerConfig) -> None:
    from starlette.responses import Response

    limit = config.max_payload_bytes

    # --- health and metadata --------------------------------------------------------------
    async def server_metadata(request: Request) -> Response:
        return _json({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def ready(request: Request) -> Response:
        return Response(status_code=200 if hub.ready else 503)

    async def model_metadata(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        try:
            table = hub.model(model)
            lv = hub.version(model, version) if version is not None else hub.default_version(model)
            return _json(lv.metadata(list(table)))
        except ServeError as exc:
            return _error(exc, None)

    async def model_ready(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        try:
            lv = hub.version(model, version) if version is not None else hub.default_version(model)
        except ServeError as exc:
            return _error(exc, None)
        return Response(status_code=200 if lv.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(hub.metrics.render(), media_type=CONTENT_TYPE)

    # --- management: repository extension and rollouts -------------------------------------
    def managed(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """A management endpoint: the bearer token is checked first; a ServeError becomes its JSON error."""

        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, config.token)
                return await handler(request)
            except ServeError as exc:
                return _error(exc, None)

        return endpoint

    @managed
    async def repository_index(request: Request) -> Response:
        body = await _json_body(request, limit, optional=True)
        only_ready = bool(body.get("ready", False)) if isinstance(body, dict) else False
        index = []
        for name in hub.repo.names():
            loaded = hub.models.get(name, {})
            for v in hub.repo.versions(name):
                lv = loaded.get(v)
                state = "READY" if lv is not None and lv.ready else "UNAVAILABLE"
                if only_ready and state != "READY":
                    continue
                entry = {"name": name, "version": str(v), "state": state}
                if lv is None:
                    entry["reason"] = "unloaded"
                index.append(entry)
        return _json(index)

    @managed
    async def repository_load(request: Request) -> Response:
        model = request.path_params["model"]
        await _json_body(request, limit, optional=True)
        saved = hub._read_rollout_state().get(model)
        try:
            new = await hub.load(model, saved=saved)
        except ServeError:
            raise
        except UserError as exc:
            raise ServeError(400, f"failed to load {model!r}: {exc}") from None
        return _json({"model": model, "loaded_versions": [str(v) for v in new],
                      "versions": [str(v) for v in hub.models.get(model, {})]})

    @managed
    async def repository_unload(request: Request) -> Response:
        model = request.path_params["model"]
        await _json_body(request, limit, optional=True)
        versions = await hub.unload(model)
        return _json({"model": model, "unloaded_versions": [str(v) for v in versions]})

    @managed
    async def rollout_status(request: Request) -> Response:
        model = request.path_params["model"]
        hub.model(model)
        return _json(hub.rollouts[model].status())

    @managed
    async def rollout_set(request: Request) -> Response:
        model = request.path_params["model"]
        hub.model(model)
        body = await _json_body(request, limit)
        if not isinstance(body, dict) or not ({"weights", "policy"} & set(body)):
            raise ServeError(400, 'expected {"weights": {"1": 80, "2": 20}, "policy": {...}} (either or both)')
        unknown = set(body) - {"weights", "policy", "reason"}
        if unknown:
            raise ServeError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        rollout = hub.rollouts[model]
        try:
            policy = None
            if body.get("policy") is not None:
                if not isinstance(body["policy"], dict):
                    raise UserError("'policy' must be an object")
                policy = with_policy_overrides(rollout.policy, body["policy"])
            if body.get("weights") is not None:
                rollout.set_weights(parse_weights(body["weights"]), policy=policy,
                                    reason=str(body.get("reason") or "set by operator")[:200])
            elif policy is not None:
                rollout.set_policy(policy)
        except ServeError:
            raise
        except UserError as exc:
            raise ServeError(400, str(exc)) from None
        hub.save_rollouts()
        log.info("rollout %s: weights %s", model, rollout.weights)
        return _json(rollout.status())

    @managed
    async def rollout_promote(request: Request) -> Response:
        model = request.path_params["model"]
        hub.model(model)
        body = await _json_body(request, limit)
        version = body.get("version") if isinstance(body, dict) else None
        try:
            rollout = hub.rollouts[model]
            rollout.promote(int(version))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ServeError(400, 'expected {"version": N}') from None
        except UserError as exc:
            raise ServeError(400, str(exc)) from None
        hub.save_rollouts()
        log.info("rollout %s: promoted version %s", model, version)
        return _json(rollout.status())

    @managed
    async def rollout_rollback(request: Request) -> Response:
        model = request.path_params["model"]
        hub.model(model)
        await _json_body(request, limit, optional=True)
        rollout = hub.rollouts[model]
        rollout.rollback()
        hub.save_rollouts()
        log.info("rollout %s: rolled back to %s", model, rollout.weights)
        return _json(rollout.status())

    get, post = ["GET"], ["POST"]
    add = app.router.add_route  # plain Starlette routes: no per-request parameter resolution
    add("/v2", server_metadata, methods=get)
    add("/v2/", server_metadata, methods=get)
    add("/v2/health/live", live, methods=get)
    add("/v2/health/ready", ready, methods=get)
    add("/v2/models/{model}", model_metadata, methods=get)
    add("/v2/models/{model}/versions/{version}", model_metadata, methods=get)
    add("/v2/models/{model}/ready", model_ready, methods=get)
    add("/v2/models/{model}/versions/{version}/ready", model_ready, methods=get)
    infer = InferEndpoint(hub, config)
    add("/v2/models/{model}/infer", infer, methods=post)  # reached only if the shortcut below is bypassed
    add("/v2/models/{model}/versions/{version}/infer", infer, methods=post)
    app.add_middleware(InferShortcut, endpoint=infer)
    add("/v2/repository/index", repository_index, methods=post)
    add("/v2/repository/models/{model}/load", repository_load, methods=post)
    add("/v2/repository/models/{model}/unload", repository_unload, methods=post)
    add("/v2/zhisuan/rollout/{model}", rollout_status, methods=get)
    add("/v2/zhisuan/rollout/{model}", rollout_set, methods=post)
    add("/v2/zhisuan/rollout/{model}/promote", rollout_promote, methods=post)
    add("/v2/zhisuan/rollout/{model}/rollback", rollout_rollback, methods=post)
    add("/metrics", metrics, methods=get)


class InferEndpoint:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` as a bare ASGI app: the hot path of the server.

    It reads the few headers it needs in one pass over the raw list and answers with two ASGI
    messages, without Starlette's Request/Response objects; everything it does is timed,
    counted, logged and recorded in the model's rollout window.
    """

    def __init__(self, hub: ModelHub, config: ServerConfig) -> None:
        self.hub = hub
        self.limit = config.max_payload_bytes
        self.sticky = config.sticky_header.lower().encode("latin-1")

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        params = scope.get("path_params") or {}
        await self.handle(params["model"], params.get("version"), scope, receive, send)

    async def handle(
        self, model: str, version: str | None, scope: dict[str, Any], receive: Callable[[], Any],
        send: Callable[[Any], Any],
    ) -> None:
        started = time.perf_counter()
        hub = self.hub
        wanted = {b"content-length": None, b"content-encoding": None, b"x-request-id": None,
                  _HEADER_LENGTH_KEY: None, self.sticky: None}
        for key, value in scope["headers"]:
            if key in wanted:
                wanted[key] = value.decode("latin-1")
        request_id = _request_id(wanted[b"x-request-id"])
        lv: LoadedVersion | None = None
        status, error, queue_ms, batch_size = 200, None, None, None
        extra: dict[str, str] = {}
        try:
            lv = hub.version(model, version, wanted[self.sticky])
            if not lv.ready:
                raise ServeError(503, f"{lv.name} v{lv.version} is not ready", {"Retry-After": "1"})
            body = await _collect_body(
                _receive_chunks(receive), wanted[b"content-length"], wanted[b"content-encoding"], self.limit
            )
            decoded = decode_infer_request(body, wanted[_HEADER_LENGTH_KEY])
            feeds = lv.check(decoded)
            package = lv.package
            if package.manifest.preprocess:
                feeds = package.preprocess(feeds)
            result = await lv.batcher.submit(feeds)
            queue_ms, batch_size = result.queue_ms, result.batch_size
            outputs = package.postprocess(result.outputs) if package.manifest.postprocess else result.outputs
            payload, header_length = encode_infer_response(
                model_name=lv.name, model_version=lv.label, request_id=decoded.id, outputs=outputs,
                requested=decoded.outputs, binary_output=decoded.binary_output,
            )
            if header_length is not None:
                extra[HEADER_LENGTH] = str(header_length)
            content_type = b"application/octet-stream" if header_length is not None else b"application/json"
        except _ClientGone:
            status, error = 499, "the client closed the connection"
            payload = b""
        except ServeError as exc:
            status, error, payload, content_type = exc.status, str(exc), dumps({"error": str(exc)}), b"application/json"
            extra.update(exc.headers)
        except UserError as exc:  # a check of the package's (pre/post-processing) on this input
            status, error = 400, str(exc)
            payload, content_type = dumps({"error": error}), b"application/json"
        except Exception as exc:  # a bug: answer, log, keep serving
            status, error = 500, f"internal error: {type(exc).__name__}: {exc}"
            log.exception("request %s failed", request_id)
            payload, content_type = dumps({"error": error}), b"application/json"
        if status != 499:
            headers = [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        latency_ms = (time.perf_counter() - started) * 1000.0
        _finish(hub, lv, model, status, latency_ms, queue_ms, batch_size, error, request_id)


_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode("latin-1")


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _receive_chunks(receive: Callable[[], Any]) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class InferShortcut:
    """ASGI middleware sending inference requests straight to :class:`InferEndpoint`.

    Everything else goes through FastAPI's routing; inference skips the router's regex matching
    and its per-request middleware, which is most of the framework cost of a small request.
    """

    _PREFIX, _SUFFIX = "/v2/models/", "/infer"

    def __init__(self, app: Any, endpoint: InferEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(self._PREFIX) and path.endswith(self._SUFFIX):
                parts = path[len(self._PREFIX) : -len(self._SUFFIX)].split("/")
                if len(parts) == 1 and parts[0]:
                    return await self.endpoint.handle(parts[0], None, scope, receive, send)
                if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
                    return await self.endpoint.handle(parts[0], parts[2], scope, receive, send)
        await self.app(scope, receive, send)


def _finish(
    hub: ModelHub, lv: LoadedVersion | None, model: str, status: int, latency_ms: float,
    queue_ms: float | None, batch_size: int | None, error: str | None, request_id: str,
) -> None:
    """Metrics, the rollout's window and the request log for one finished request."""
    known = lv is not None or model in hub.models
    model_label = model if known else UNKNOWN
    version_label = lv.label if lv is not None else ""
    hub.metrics.observe_request(
        model_label, version_label, status, latency_ms / 1000.0, None if queue_ms is None else queue_ms / 1000.0
    )
    if lv is not None and (status < 400 or status >= 500):
        rollout = hub.rollouts.get(lv.name)
        if rollout is not None:
            event = rollout.record(lv.version, server_error=status >= 500, latency_ms=latency_ms)
            if event is not None:
                hub.metrics.auto_rollbacks.labels(lv.name).inc()
                log.warning("rollout %s: %s", lv.name, event.reason)
                hub.save_rollouts()
    if hub.request_log is not None:
        try:
            hub.request_log.write({
                "request_id": request_id,
                "model": model[:200],
                "version": version_label or None,
                "status": status,
                "latency_ms": round(latency_ms, 3),
                "queue_ms": None if queue_ms is None else round(queue_ms, 3),
                "batch_size": batch_size,
                "error": error[:1000] if error else None,
            })
        except OSError as exc:  # a full disk must not fail requests
            log.warning("request log write failed: %s", exc)


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------
def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    return Response(dumps(obj), status_code=status, media_type=_JSON, headers=dict(headers or {}))


def _error(exc: ServeError, request_id: str | None) -> Response:
    headers = dict(exc.headers)
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return _json({"error": str(exc)}, exc.status, headers)


_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def _request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new id unique to this server process."""
    if given and _REQUEST_ID.match(given):
        return given
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def _authorize(request: Request, token: str | None) -> None:
    if not token:
        raise ServeError(
            403, f"management endpoints are disabled: start the server with {TOKEN_ENV} set to a secret token"
        )
    header = request.headers.get("authorization")
    if not header:
        raise ServeError(
            401, f"this endpoint needs 'Authorization: Bearer <token>' (the server's {TOKEN_ENV})",
            {"WWW-Authenticate": "Bearer"},
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ServeError(403, "invalid bearer token")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (also after gzip/deflate decoding)."""
    return await _collect_body(
        request.stream(), request.headers.get("content-length"), request.headers.get("content-encoding"), limit
    )


async def _collect_body(
    chunks: AsyncIterator[bytes], declared: str | None, encoding: str | None, limit: int
) -> bytes:
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ServeError(400, "bad Content-Length header") from None
        if size > limit:
            raise ServeError(413, f"the request body of {size} bytes exceeds the limit of {limit} bytes")
    parts, total = [], 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ServeError(413, f"the request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ServeError(415, f"unsupported Content-Encoding {encoding[:20]!r}; use gzip, deflate or none")
    decoder = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ServeError(400, f"the {encoding} body is corrupt: {exc}") from None
    if len(data) > limit:
        raise ServeError(413, f"the decompressed request body exceeds the limit of {limit} bytes")
    if not decoder.eof:
        raise ServeError(400, f"the {encoding} body is truncated")
    return data


async def _json_body(request: Request, limit: int, *, optional: bool = False) -> Any:
    body = await _read_body(request, min(limit, 1 << 20))
    if not body.strip():
        if optional:
            return {}
        raise ServeError(400, "expected a JSON body")
    return loads(body)


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
    progress: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Load the models, then serve until interrupted (SIGINT/SIGTERM). What ``zhisuan serve`` runs.

    Models load before the port opens, so a broken package is a one-line error, not a traceback.
    ``on_ready(hub, url)`` is called once the server accepts connections.
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

    app = create_app(config)
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
