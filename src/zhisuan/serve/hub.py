"""The state of one inference server: loaded model versions, their rollouts, metrics and lifecycle.

A :class:`ModelHub` opens the repository and, per model version, makes an executor (with the
executor factory it is given: :func:`~zhisuan.serve.executor.make_executor` unless a test or an
embedder passes another, e.g. :class:`~zhisuan.serve.testing.MockEngine`) and a dynamic batcher;
per model it keeps a :class:`~zhisuan.serve.rollout.Rollout`. It knows nothing of HTTP routing:
:mod:`zhisuan.serve.routes` parses requests, calls the hub and answers. Its methods raise
:class:`~zhisuan.serve.protocol.ServeError` with the HTTP status a refusal gets.

>>> hub = ModelHub(ServerConfig(repo="models"), executor_factory=make_executor)  # doctest: +SKIP
>>> await hub.start()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.serve.batching import BatchPolicy, BatchStats, DynamicBatcher
from zhisuan.serve.config import ServerConfig
from zhisuan.serve.datatypes import Datatype
from zhisuan.serve.executor import ExecutorFactory, make_executor
from zhisuan.serve.logs import RequestLog
from zhisuan.serve.metrics import UNKNOWN, ServeMetrics, VersionState
from zhisuan.serve.protocol import InferRequest, ServeError, loads
from zhisuan.serve.rollout import Rollout, parse_weights, with_policy_overrides

if TYPE_CHECKING:
    from zhisuan.serve.executor import Executor
    from zhisuan.serve.package import Package, TensorSig

__all__ = ["LoadedVersion", "ModelHub"]

log = logging.getLogger("zhisuan.serve")

_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino", "tensorrt": "tensorrt_plan"}


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
            feeds[name] = _onnx_strings(arr, name) if sig.datatype == Datatype.BYTES else arr
        for item in request.outputs:
            if item.name not in self.output_names:
                raise ServeError(
                    400, f"unknown output {item.name!r}; {self.name} gives: {', '.join(sorted(self.output_names))}"
                )
        return feeds

    def prepare(self, request: InferRequest) -> dict[str, np.ndarray]:
        """The model inputs of a request: checked (:meth:`check`), then the package's preprocessing."""
        feeds = self.check(request)
        return self.package.preprocess(feeds) if self.package.manifest.preprocess else feeds

    def respond(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the client gets of the model's outputs: the package's postprocessing applied."""
        return self.package.postprocess(outputs) if self.package.manifest.postprocess else outputs


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
    """Every loaded model version, its rollout, the metrics and the request log of one server.

    ``executor_factory`` makes each version's executor (see :class:`~zhisuan.serve.executor.ExecutorFactory`).
    """

    def __init__(self, config: ServerConfig, *, executor_factory: ExecutorFactory = make_executor) -> None:
        self.config = config
        self.executor_factory = executor_factory
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
        self._progress: Progress = no_progress

    # start and stop ------------------------------------------------------------------------
    async def start(self, progress: Progress = no_progress) -> None:
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
            self._progress = no_progress
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
                if saved is not None:
                    try:
                        rollout.restore(saved)
                    except UserError as exc:
                        log.warning("ignoring the saved rollout state of %s in %s: %s",
                                    name, self.config.rollout_state_path, exc)
            else:
                rollout.set_versions(self.models[name], reason=f"loaded versions {new or 'none'}, dropped {gone or 'none'}")
            await self._unload_versions(name, gone, keep_entry=True)
            if new:
                log.info("loaded %s versions %s", name, ", ".join(map(str, new)))
            return new

    async def _load_version(self, name: str, version: int) -> LoadedVersion:
        config = self.config
        self._progress(f"loading {name} v{version} (verifying checksums, starting {config.replicas} "
                       f"{config.engine} replica(s))")
        package = await asyncio.to_thread(self.repo.package, name, version)
        executor = await asyncio.to_thread(
            self.executor_factory, package, replicas=config.replicas, engine=config.engine,
            runtime=config.runtime, threads=config.threads, concurrency=config.batches_in_flight,
            request_timeout_s=config.request_timeout_s,
        )
        try:
            start = getattr(executor, "start", None)
            if start is not None:
                await start()
            policy = self._policy(package)
            label = str(version)
            batcher = DynamicBatcher(
                _input_faults(executor.infer, f"{name} v{version}"), policy, batchable=policy.max_batch_size > 1, name=f"{name} v{version}",
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
        # only the canonical spelling: "01", "+1" or " 1" are not version 1
        lv = table.get(int(version)) if _VERSION.fullmatch(version) else None
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

    def rollout(self, name: str) -> Rollout:
        self.model(name)
        return self.rollouts[name]

    # management (the repository extension and rollouts) ------------------------------------
    def repository_index(self, *, only_ready: bool = False) -> list[dict[str, str]]:
        """Every version in the repository with its state (``READY`` / ``UNAVAILABLE``), loaded or not."""
        index = []
        for name in self.repo.names():
            loaded = self.models.get(name, {})
            for v in self.repo.versions(name):
                lv = loaded.get(v)
                state = "READY" if lv is not None and lv.ready else "UNAVAILABLE"
                if only_ready and state != "READY":
                    continue
                entry = {"name": name, "version": str(v), "state": state}
                if lv is None:
                    entry["reason"] = "unloaded"
                index.append(entry)
        return index

    async def load_model(self, name: str) -> list[int]:
        """:meth:`load` on an operator's request: the saved rollout state applies, a bad package is a 400."""
        saved = self._read_rollout_state().get(name)
        try:
            return await self.load(name, saved=saved)
        except ServeError:
            raise
        except UserError as exc:
            raise ServeError(400, f"failed to load {name!r}: {exc}") from None

    def set_rollout(
        self, name: str, *, weights: Any = None, policy: Any = None, reason: str = "set by operator"
    ) -> Rollout:
        """New traffic weights and/or policy overrides for ``name``'s rollout, saved."""
        rollout = self.rollout(name)
        try:
            new_policy = None
            if policy is not None:
                if not isinstance(policy, dict):
                    raise UserError("'policy' must be an object")
                new_policy = with_policy_overrides(rollout.policy, policy)
            if weights is not None:
                rollout.set_weights(parse_weights(weights), policy=new_policy, reason=reason)
            elif new_policy is not None:
                rollout.set_policy(new_policy)
        except ServeError:
            raise
        except UserError as exc:
            raise ServeError(400, str(exc)) from None
        self.save_rollouts()
        log.info("rollout %s: weights %s", name, rollout.weights)
        return rollout

    def promote(self, name: str, version: int) -> Rollout:
        """All of ``name``'s traffic to ``version``, saved."""
        rollout = self.rollout(name)
        try:
            rollout.promote(version)
        except UserError as exc:
            raise ServeError(400, str(exc)) from None
        self.save_rollouts()
        log.info("rollout %s: promoted version %s", name, version)
        return rollout

    def rollback(self, name: str) -> Rollout:
        """``name``'s rollout back to its previous weights, saved."""
        rollout = self.rollout(name)
        rollout.rollback()
        self.save_rollouts()
        log.info("rollout %s: rolled back to %s", name, rollout.weights)
        return rollout

    # finished requests -----------------------------------------------------------------------
    def record_request(
        self, *, model: str, lv: LoadedVersion | None, status: int, latency_ms: float, queue_ms: float | None,
        batch_size: int | None, error: str | None, request_id: str,
    ) -> None:
        """Metrics, the rollout's window and the request log for one finished inference request."""
        known = lv is not None or model in self.models
        model_label = model if known else UNKNOWN
        version_label = lv.label if lv is not None else ""
        self.metrics.observe_request(
            model_label, version_label, status, latency_ms / 1000.0, None if queue_ms is None else queue_ms / 1000.0
        )
        if lv is not None and (status < 400 or status >= 500):
            rollout = self.rollouts.get(lv.name)
            if rollout is not None:
                event = rollout.record(lv.version, server_error=status >= 500, latency_ms=latency_ms)
                if event is not None:
                    self.metrics.auto_rollbacks.labels(lv.name).inc()
                    log.warning("rollout %s: %s", lv.name, event.reason)
                    self.save_rollouts()
        if self.request_log is not None:
            try:
                self.request_log.write({
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
        if not isinstance(data, dict):
            log.warning("ignoring the saved rollout state %s: it is not a JSON object", path)
            return {}
        return data

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


_VERSION = re.compile(r"[1-9][0-9]{0,17}")

#: Run failures that the request's values caused (a well-formed request that passed every check of
#: the signature): ONNX Runtime reports them with status INVALID_ARGUMENT (an index out of range in
#: Gather/ScatterND/..., a value a kernel refuses). They are the client's fault: 422, not counted
#: against a canary. Every other run failure (FAIL, RUNTIME_EXCEPTION, a dead replica, ...) is the
#: model's or the server's: 500, counted.
_INPUT_FAULTS = ("INVALID_ARGUMENT",)


def _input_faults(
    infer: Callable[[dict[str, np.ndarray]], Any], name: str
) -> Callable[[dict[str, np.ndarray]], Any]:
    """``infer`` with the run failures that the input caused raised as a 422 :class:`ServeError`."""

    async def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return await infer(feeds)
        except ServeError:
            raise
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if any(code in message for code in _INPUT_FAULTS):
                raise ServeError(422, f"{name} refused this input: {message[:500]}") from None
            raise

    return run


def _batchable(package: Package) -> bool:
    sig = package.model_signature
    tensors = [*sig["inputs"], *sig["outputs"]]
    return bool(tensors) and all(len(t.shape) >= 1 and t.shape[0] == -1 for t in tensors)

