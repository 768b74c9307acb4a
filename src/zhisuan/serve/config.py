"""The inference server's configuration: one frozen dataclass, validated when it is made.

>>> config = ServerConfig(repo="models", max_batch_size=16, max_queue_delay_ms=2)  # doctest: +SKIP
>>> app = create_app(config)  # doctest: +SKIP
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.results import Record

__all__ = [
    "DEFAULT_LOG_DIR",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_ROLLOUT_STATE",
    "MAX_BATCH_SIZE",
    "MAX_CONCURRENCY",
    "MAX_QUEUE_DELAY_MS",
    "MAX_QUEUE_SIZE",
    "MAX_REQUEST_TIMEOUT_S",
    "STICKY_HEADER",
    "TOKEN_ENV",
    "Engine",
    "ServerConfig",
]

TOKEN_ENV = "ZHISUAN_TOKEN"
STICKY_HEADER = "X-Zhisuan-Sticky"
DEFAULT_MAX_PAYLOAD_BYTES = 64 << 20  # 64 MiB: a batch of 64 224x224 fp32 images is ~38 MiB
# What the server keeps under the repository root unless told otherwise. Model names may not take
# these (zhisuan.serve.package.RESERVED_NAMES): a model would share the folder with server state.
DEFAULT_LOG_DIR = "logs"
DEFAULT_ROLLOUT_STATE = ".rollouts.json"
# Upper bounds of the batching values (packages, the server's options, each version's policy):
# far above any real use, low enough that a typo (10**20) is an error, not a queue that never fills.
MAX_BATCH_SIZE = 1 << 16  # rows per batch
MAX_QUEUE_DELAY_MS = 60_000
MAX_QUEUE_SIZE = 1 << 20  # waiting requests per model version
MAX_CONCURRENCY = 1024  # batches in flight per model version
MAX_REQUEST_TIMEOUT_S = 86_400.0


class Engine(enum.StrEnum):
    """Where a model version's replicas run."""

    LOCAL = "local"  # this machine: in this process, or replica processes
    RAY = "ray"  # Ray Serve deployments


@dataclass(frozen=True)
class ServerConfig(Record):
    """Everything ``zhisuan serve`` can be told. ``None`` means "as the package says"."""

    repo: Path
    models: tuple[str, ...] = ()  # empty: every model of the repository
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    engine: Engine = Engine.LOCAL
    runtime: str | None = None
    threads: int | None = None  # intra-op threads per runner
    max_batch_size: int | None = None  # overrides the packages' batching (batchable models only)
    max_queue_delay_ms: float | None = None
    max_queue_size: int = 256  # waiting requests per model version before 429
    concurrency: int | None = None  # batches in flight per model version; None: one per replica
    request_timeout_s: float = 30.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    token: str | None = field(default=None, repr=False)  # bearer token of management endpoints
    sticky_header: str = STICKY_HEADER
    log_dir: Path | None = None  # default: <repo>/logs
    request_log: bool = True
    rollout_state: Path | None = None  # default: <repo>/.rollouts.json; survives restarts
    telemetry: bool = True
    telemetry_interval_s: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "repo", Path(self.repo))
        object.__setattr__(self, "models", tuple(self.models))
        if self.log_dir is not None:
            object.__setattr__(self, "log_dir", Path(self.log_dir))
        if self.rollout_state is not None:
            object.__setattr__(self, "rollout_state", Path(self.rollout_state))
        if not 0 <= self.port <= 65535:
            raise UserError(f"port {self.port} is out of range 0-65535")
        if self.replicas < 1:
            raise UserError(f"--replicas must be >= 1, not {self.replicas}")
        if self.engine not in tuple(Engine):
            raise UserError(f"unknown engine {self.engine!r}; choose {' or '.join(Engine)}")
        object.__setattr__(self, "engine", Engine(self.engine))
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, not {self.threads}")
        if self.max_batch_size is not None and not 1 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise UserError(f"--max-batch must be 1..{MAX_BATCH_SIZE}, not {self.max_batch_size}")
        if self.max_queue_delay_ms is not None and not 0 <= self.max_queue_delay_ms <= MAX_QUEUE_DELAY_MS:
            raise UserError(f"--max-delay-ms must be 0..{MAX_QUEUE_DELAY_MS}, not {self.max_queue_delay_ms}")
        if not 1 <= self.max_queue_size <= MAX_QUEUE_SIZE:
            raise UserError(f"the queue size must be 1..{MAX_QUEUE_SIZE}, not {self.max_queue_size}")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UserError(f"--concurrency must be 1..{MAX_CONCURRENCY}, not {self.concurrency}")
        if not 0 < self.request_timeout_s <= MAX_REQUEST_TIMEOUT_S:
            raise UserError(
                f"the request timeout must be > 0 and <= {MAX_REQUEST_TIMEOUT_S:g} s, not {self.request_timeout_s}"
            )
        if self.max_payload_bytes < 1024:
            raise UserError(f"the payload limit must be >= 1024 bytes, not {self.max_payload_bytes}")
        if self.token is not None and len(self.token) < 8:
            raise UserError(f"{TOKEN_ENV} must be at least 8 characters long")
        if not self.telemetry_interval_s > 0:
            raise UserError(f"the telemetry interval must be > 0 s, not {self.telemetry_interval_s}")

    @classmethod
    def from_env(cls, **kwargs: Any) -> ServerConfig:
        """A config whose ``token`` comes from ``$ZHISUAN_TOKEN`` unless given."""
        kwargs.setdefault("token", os.environ.get(TOKEN_ENV) or None)
        return cls(**kwargs)

    @property
    def logs_path(self) -> Path:
        return self.log_dir if self.log_dir is not None else self.repo / DEFAULT_LOG_DIR

    @property
    def rollout_state_path(self) -> Path:
        return self.rollout_state if self.rollout_state is not None else self.repo / DEFAULT_ROLLOUT_STATE

    @property
    def batches_in_flight(self) -> int:
        return self.concurrency if self.concurrency is not None else self.replicas

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "token": "set" if self.token else None}  # never echo the secret
