"""The server's HTTP routes: thin handlers that parse a request, call the :class:`ModelHub`, answer.

:func:`install` adds them to a FastAPI app (this module imports Starlette: the server imports it
when it builds the app, not before). Inference takes a shortcut past the router
(:class:`InferShortcut` -> :class:`InferEndpoint`, a bare ASGI app); the other endpoints are
:class:`Routes` methods. Every refusal is a JSON ``{"error": ...}`` with its 4xx status; the hub
raises them as :class:`~zhisuan.serve.protocol.ServeError`.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from zhisuan import __version__
from zhisuan.errors import UserError
from zhisuan.serve.config import TOKEN_ENV, ServerConfig
from zhisuan.serve.hub import LoadedVersion, ModelHub
from zhisuan.serve.metrics import CONTENT_TYPE
from zhisuan.serve.protocol import (
    HEADER_LENGTH,
    ServeError,
    decode_infer_request,
    dumps,
    encode_infer_response,
    loads,
)
from zhisuan.serve.server import EXTENSIONS, SERVER_NAME

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["InferEndpoint", "InferShortcut", "Routes", "install"]

log = logging.getLogger("zhisuan.serve")

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_JSON = "application/json"

Handler = Callable[[Request], Awaitable[Response]]


def install(app: FastAPI, hub: ModelHub, config: ServerConfig) -> None:
    """Add every endpoint (see :mod:`zhisuan.serve.server`) and the error handler to ``app``."""

    async def http_error(_request: Any, exc: Any) -> Response:
        status = int(getattr(exc, "status_code", 500))
        detail = getattr(exc, "detail", None) or "error"
        return _error(ServeError(status, "not found" if status == 404 else str(detail)), None)

    app.add_exception_handler(StarletteHTTPException, http_error)
    routes = Routes(hub, config)
    managed = routes.managed
    get, post = ["GET"], ["POST"]
    add = app.router.add_route  # plain Starlette routes: no per-request parameter resolution
    add("/v2", routes.server_metadata, methods=get)
    add("/v2/", routes.server_metadata, methods=get)
    add("/v2/health/live", routes.live, methods=get)
    add("/v2/health/ready", routes.ready, methods=get)
    add("/v2/models/{model}", routes.model_metadata, methods=get)
    add("/v2/models/{model}/versions/{version}", routes.model_metadata, methods=get)
    add("/v2/models/{model}/ready", routes.model_ready, methods=get)
    add("/v2/models/{model}/versions/{version}/ready", routes.model_ready, methods=get)
    infer = InferEndpoint(hub, config)
    add("/v2/models/{model}/infer", infer, methods=post)  # reached only if the shortcut below is bypassed
    add("/v2/models/{model}/versions/{version}/infer", infer, methods=post)
    app.add_middleware(InferShortcut, endpoint=infer)
    add("/v2/repository/index", managed(routes.repository_index), methods=post)
    add("/v2/repository/models/{model}/load", managed(routes.repository_load), methods=post)
    add("/v2/repository/models/{model}/unload", managed(routes.repository_unload), methods=post)
    add("/v2/zhisuan/rollout/{model}", managed(routes.rollout_status), methods=get)
    add("/v2/zhisuan/rollout/{model}", managed(routes.rollout_set), methods=post)
    add("/v2/zhisuan/rollout/{model}/promote", managed(routes.rollout_promote), methods=post)
    add("/v2/zhisuan/rollout/{model}/rollback", managed(routes.rollout_rollback), methods=post)
    add("/metrics", routes.metrics, methods=get)


class Routes:
    """The endpoints other than inference, one method each."""

    def __init__(self, hub: ModelHub, config: ServerConfig) -> None:
        self.hub = hub
        self.token = config.token
        self.limit = config.max_payload_bytes

    # health and metadata ---------------------------------------------------------------------
    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.hub.ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        try:
            table = self.hub.model(model)
            lv = self.hub.version(model, version) if version is not None else self.hub.default_version(model)
            return _json(lv.metadata(list(table)))
        except ServeError as exc:
            return _error(exc, None)

    async def model_ready(self, request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        try:
            lv = self.hub.version(model, version) if version is not None else self.hub.default_version(model)
        except ServeError as exc:
            return _error(exc, None)
        return Response(status_code=200 if lv.ready else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(self.hub.metrics.render(), media_type=CONTENT_TYPE)

    # management: the repository extension and rollouts ---------------------------------------
    def managed(self, handler: Handler) -> Handler:
        """A management endpoint: the bearer token is checked first; a ServeError becomes its JSON error."""

        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, self.token)
                return await handler(request)
            except ServeError as exc:
                return _error(exc, None)

        return endpoint

    async def repository_index(self, request: Request) -> Response:
        body = await _json_body(request, self.limit, optional=True)
        only_ready = bool(body.get("ready", False)) if isinstance(body, dict) else False
        return _json(self.hub.repository_index(only_ready=only_ready))

    async def repository_load(self, request: Request) -> Response:
        model = request.path_params["model"]
        await _json_body(request, self.limit, optional=True)
        new = await self.hub.load_model(model)
        return _json({"model": model, "loaded_versions": [str(v) for v in new],
                      "versions": [str(v) for v in self.hub.models.get(model, {})]})

    async def repository_unload(self, request: Request) -> Response:
        model = request.path_params["model"]
        await _json_body(request, self.limit, optional=True)
        versions = await self.hub.unload(model)
        return _json({"model": model, "unloaded_versions": [str(v) for v in versions]})

    async def rollout_status(self, request: Request) -> Response:
        return _json(self.hub.rollout(request.path_params["model"]).status())

    async def rollout_set(self, request: Request) -> Response:
        model = request.path_params["model"]
        self.hub.rollout(model)  # an unknown model is a 404 before the body is looked at
        body = await _json_body(request, self.limit)
        if not isinstance(body, dict) or not ({"weights", "policy"} & set(body)):
            raise ServeError(400, 'expected {"weights": {"1": 80, "2": 20}, "policy": {...}} (either or both)')
        unknown = set(body) - {"weights", "policy", "reason"}
        if unknown:
            raise ServeError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        rollout = self.hub.set_rollout(
            model, weights=body.get("weights"), policy=body.get("policy"),
            reason=str(body.get("reason") or "set by operator")[:200],
        )
        return _json(rollout.status())

    async def rollout_promote(self, request: Request) -> Response:
        model = request.path_params["model"]
        self.hub.rollout(model)
        body = await _json_body(request, self.limit)
        version = body.get("version") if isinstance(body, dict) else None
        if isinstance(version, str) and re.fullmatch(r"[1-9][0-9]{0,17}", version):
            version = int(version)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ServeError(400, 'expected {"version": N}, N a whole version number')
        return _json(self.hub.promote(model, version).status())

    async def rollout_rollback(self, request: Request) -> Response:
        model = request.path_params["model"]
        self.hub.rollout(model)
        await _json_body(request, self.limit, optional=True)
        return _json(self.hub.rollback(model).status())


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
            result = await lv.batcher.submit(lv.prepare(decoded))
            queue_ms, batch_size = result.queue_ms, result.batch_size
            outputs = lv.respond(result.outputs)
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
        except Exception as exc:  # a bug: answer, log one line, keep serving
            detail = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
            status, error = 500, f"internal error: {type(exc).__name__}: {detail}"
            log.error("request %s to %s failed: %s", request_id, model[:100], error)
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
        hub.record_request(
            model=model, lv=lv, status=status, latency_ms=latency_ms, queue_ms=queue_ms, batch_size=batch_size,
            error=error, request_id=request_id,
        )


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


# --- helpers -------------------------------------------------------------------------------
def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
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
    if decoder.unused_data:
        raise ServeError(400, f"{len(decoder.unused_data)} bytes follow the end of the {encoding} body")
    return data


async def _json_body(request: Request, limit: int, *, optional: bool = False) -> Any:
    body = await _read_body(request, min(limit, 1 << 20))
    if not body.strip():
        if optional:
            return {}
        raise ServeError(400, "expected a JSON body")
    return loads(body)
