"""Gray release: split one model's traffic between versions, promote, roll back — by hand or by itself.

A :class:`Rollout` per model holds the current weights (version -> share) and the *stable*
weights it returns to on rollback. Setting new weights makes the previous ones stable; versions
whose share grew are the *canaries*. Every finished request is recorded per version in a sliding
window; when a canary's server-error rate or p99 latency crosses the rollout's thresholds (with
at least ``min_requests`` in the window), the rollout rolls back by itself and records why.

Routing is weighted random, or — when the client sends a stickiness key (a header) — a
consistent hash of the key, so one user keeps seeing one version while the weights stay put.

>>> r = Rollout("m", versions=[1, 2])
>>> r.weights
{2: 100.0}
>>> r.set_weights({1: 80, 2: 20}, policy=RolloutPolicy(max_error_rate=0.1))
>>> r.choose(sticky_key="user-42") in (1, 2)
True
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.results import Record

__all__ = [
    "Rollout",
    "RolloutAction",
    "RolloutClient",
    "RolloutEvent",
    "RolloutPolicy",
    "parse_weights",
    "with_policy_overrides",
]

MAX_EVENTS = 200
#: The largest weight of one version: weights are shares, and their sum must stay finite.
MAX_WEIGHT = 1e6
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


class RolloutAction(enum.StrEnum):
    """What changed the weights (the ``action`` of a :class:`RolloutEvent`)."""

    SET = "set"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    AUTO_ROLLBACK = "auto-rollback"
    VERSIONS = "versions"  # versions were loaded or unloaded
    RESTORE = "restore"  # the saved state was applied at start-up


@dataclass(frozen=True)
class RolloutPolicy(Record):
    """When a canary is rolled back automatically. ``None`` thresholds are not checked."""

    max_error_rate: float | None = None  # server errors (5xx) / requests, 0-1
    max_p99_ms: float | None = None
    window_s: float = 60.0
    min_requests: int = 20  # in the window, before the canary is judged

    def __post_init__(self) -> None:
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise UserError(f"max error rate must be between 0 and 1, not {self.max_error_rate}")
        if self.max_p99_ms is not None and not self.max_p99_ms > 0:
            raise UserError(f"max p99 latency must be > 0 ms, not {self.max_p99_ms}")
        if not self.window_s > 0:
            raise UserError(f"the window must be > 0 s, not {self.window_s}")
        if self.min_requests < 1:
            raise UserError(f"min requests must be >= 1, not {self.min_requests}")

    @property
    def automatic(self) -> bool:
        return self.max_error_rate is not None or self.max_p99_ms is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPolicy:
        if not isinstance(data, Mapping):
            raise UserError("a rollout policy must be an object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown rollout policy field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
        values: dict[str, float | None] = {}
        for name in known:
            value = data.get(name)
            number = None if value is None or isinstance(value, str) else _number(value)
            if value is not None and number is None:
                raise UserError(f"rollout policy value {name} must be a number, not {str(value)[:20]}")
            values[name] = number
        min_requests = values["min_requests"]
        if min_requests is not None and min_requests != int(min_requests):
            raise UserError(f"min requests must be a whole number, not {min_requests:g}")
        window_s = values["window_s"]
        return cls(
            max_error_rate=values["max_error_rate"],
            max_p99_ms=values["max_p99_ms"],
            window_s=60.0 if window_s is None else window_s,
            min_requests=20 if min_requests is None else int(min_requests),
        )


@dataclass(frozen=True)
class RolloutEvent(Record):
    """One change of weights: who or what made it, and why."""

    ts: float  # unix time
    action: RolloutAction
    weights: dict[int, float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The fields, with the UTC ``time`` after ``ts`` and the versions as JSON keys (strings)."""
        return {
            "ts": self.ts,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts)),
            **super().to_dict(),
            "weights": {str(v): w for v, w in self.weights.items()},
        }


def parse_weights(text: str | Mapping[Any, Any]) -> dict[int, float]:
    """``"1=80,2=20"`` or ``{"1": 80, "2": 20}`` -> ``{1: 80.0, 2: 20.0}`` (validated)."""
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(text, str):
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            version, sep, weight = part.partition("=")
            if not sep:
                raise UserError(f"bad weight {part!r}; write VERSION=WEIGHT, e.g. 1=80,2=20")
            pairs.append((version.strip(), weight.strip()))
    elif isinstance(text, Mapping):
        pairs = text.items()
    else:
        raise UserError("weights must be a mapping of version to weight")
    weights: dict[int, float] = {}
    for version, weight in pairs:
        # versions are written as in the URL ("1", not "01" or "+1"); weights are numbers (not
        # true), or number strings in the text form
        v = _version(version)
        w = _number(weight) if not isinstance(weight, str) or isinstance(text, str) else None
        if v is None or w is None:
            raise UserError(
                f"bad weight {str(version)[:20]}={str(weight)[:20]}: the version is a whole number, the weight a number"
            )
        if not 0 <= w <= MAX_WEIGHT:
            raise UserError(f"weight of version {v} must be a number from 0 to {MAX_WEIGHT:g}, not {str(weight)[:20]}")
        if v in weights:
            raise UserError(f"version {v} is given twice")
        weights[v] = w
    if not weights or sum(weights.values()) <= 0:
        raise UserError("at least one version needs a weight > 0")
    return weights


def _version(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 1 else None
    if isinstance(value, str) and _VERSION.fullmatch(value):
        return int(value)
    return None


def _number(value: Any) -> float | None:
    """``value`` as a finite float: an int or float (not a bool) or a number string, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


class _Window:
    """Outcomes of one version over the last ``window_s`` seconds, plus lifetime totals."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, bool, float]] = deque()  # (t, server_error, latency_ms)
        self.total = 0
        self.errors = 0

    def add(self, t: float, error: bool, latency_ms: float) -> None:
        self.events.append((t, error, latency_ms))
        self.total += 1
        self.errors += error

    def trim(self, since: float) -> None:
        while self.events and self.events[0][0] < since:
            self.events.popleft()

    def stats(self) -> dict[str, Any]:
        n = len(self.events)
        if not n:
            return {"requests": 0, "errors": 0, "error_rate": None, "p50_ms": None, "p99_ms": None}
        lat = np.fromiter((e[2] for e in self.events), dtype=np.float64, count=n)
        errors = sum(e[1] for e in self.events)
        return {
            "requests": n,
            "errors": errors,
            "error_rate": errors / n,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }


class Rollout:
    """Traffic weights of one model's versions, with rollback history and automatic rollback."""

    def __init__(
        self,
        model: str,
        versions: Iterable[int],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.model = model
        self._versions = sorted(set(versions))
        if not self._versions:
            raise UserError(f"model {model!r} has no versions to route to")
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        latest = self._versions[-1]
        self._weights: dict[int, float] = {latest: 100.0}  # like Triton: the latest version serves
        self._stable: dict[int, float] = dict(self._weights)
        self.policy = RolloutPolicy()
        self._windows: dict[int, _Window] = {v: _Window() for v in self._versions}
        self._events: deque[RolloutEvent] = deque(maxlen=MAX_EVENTS)
        self._table: tuple[list[float], list[int]] = ([], [])
        self._rebuild()

    # state -----------------------------------------------------------------------------------
    @property
    def weights(self) -> dict[int, float]:
        return dict(self._weights)

    @property
    def stable_weights(self) -> dict[int, float]:
        return dict(self._stable)

    @property
    def versions(self) -> list[int]:
        return list(self._versions)

    @property
    def canaries(self) -> list[int]:
        """Versions with a larger share now than in the stable weights."""
        total_now, total_stable = sum(self._weights.values()), sum(self._stable.values())
        return sorted(
            v
            for v, w in self._weights.items()
            if w > 0 and w / total_now > self._stable.get(v, 0.0) / total_stable + 1e-12
        )

    @property
    def events(self) -> list[RolloutEvent]:
        return list(self._events)

    def _rebuild(self) -> None:
        cumulative, versions, total = [], [], 0.0
        for v, w in sorted(self._weights.items()):
            if w > 0:
                total += w
                cumulative.append(total)
                versions.append(v)
        self._table = ([c / total for c in cumulative], versions)

    def _event(self, action: RolloutAction, reason: str) -> None:
        self._events.append(RolloutEvent(self._wall(), action, dict(self._weights), reason))

    def _check_versions(self, versions: Iterable[int]) -> None:
        missing = sorted(set(versions) - set(self._versions))
        if missing:
            raise UserError(
                f"model {self.model!r} has no loaded version {', '.join(map(str, missing))}; "
                f"loaded: {', '.join(map(str, self._versions))}"
            )

    # changes ---------------------------------------------------------------------------------
    def set_weights(
        self, weights: Mapping[int, float], *, policy: RolloutPolicy | None = None, reason: str = "set by operator"
    ) -> None:
        """New weights; the current ones become the stable weights a rollback returns to."""
        weights = parse_weights({str(k): v for k, v in weights.items()})
        self._check_versions(weights)
        with self._lock:
            if weights != self._weights:
                self._stable = dict(self._weights)
                self._weights = dict(weights)
                self._rebuild()
            if policy is not None:
                self.policy = policy
            for window in self._windows.values():  # judge the new split on fresh data only
                window.events.clear()
            self._event(RolloutAction.SET, reason)

    def set_policy(self, policy: RolloutPolicy) -> None:
        with self._lock:
            self.policy = policy

    def promote(self, version: int, *, reason: str = "promoted by operator") -> None:
        """Send all traffic to ``version`` and make that the stable state."""
        self._check_versions([version])
        with self._lock:
            self._weights = {version: 100.0}
            self._stable = dict(self._weights)
            self._rebuild()
            self._event(RolloutAction.PROMOTE, reason)

    def rollback(
        self, *, reason: str = "rolled back by operator", action: RolloutAction = RolloutAction.ROLLBACK
    ) -> None:
        """Return to the stable weights."""
        with self._lock:
            self._rollback_locked(reason, RolloutAction(action))

    def _rollback_locked(self, reason: str, action: RolloutAction) -> None:
        self._weights = dict(self._stable)
        self._rebuild()
        for window in self._windows.values():
            window.events.clear()
        self._event(action, reason)

    def set_versions(self, versions: Iterable[int], *, reason: str) -> None:
        """The loaded versions changed (load/unload): drop weights of versions that are gone."""
        new = sorted(set(versions))
        if not new:
            raise UserError(f"model {self.model!r} would have no versions left")
        with self._lock:
            self._versions = new
            for v in new:
                self._windows.setdefault(v, _Window())
            latest = {new[-1]: 100.0}
            self._weights = {v: w for v, w in self._weights.items() if v in new} or latest
            self._stable = {v: w for v, w in self._stable.items() if v in new} or dict(self._weights)
            if sum(self._weights.values()) <= 0:
                self._weights = latest
            self._rebuild()
            self._event(RolloutAction.VERSIONS, reason)

    # requests --------------------------------------------------------------------------------
    def choose(self, sticky_key: str | None = None) -> int:
        """A version for a request that names none: by the stickiness key's hash, or at random."""
        cumulative, versions = self._table
        if len(versions) == 1:
            return versions[0]
        if sticky_key:
            digest = hashlib.blake2b(f"{self.model}\0{sticky_key}".encode(), digest_size=8).digest()
            u = int.from_bytes(digest, "big") / 2.0**64
        else:
            u = self._rng.random()
        return versions[min(bisect.bisect_right(cumulative, u), len(versions) - 1)]

    def record(self, version: int, *, server_error: bool, latency_ms: float) -> RolloutEvent | None:
        """Count one finished request; returns the automatic rollback event if this triggered one."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(version)
            if window is None:
                return None
            window.add(now, server_error, latency_ms)
            policy = self.policy
            window.trim(now - policy.window_s)
            if not policy.automatic or version not in self.canaries:
                return None
            stats = window.stats()
            if stats["requests"] < policy.min_requests:
                return None
            reasons = []
            if policy.max_error_rate is not None and stats["error_rate"] > policy.max_error_rate:
                reasons.append(f"error rate {stats['error_rate']:.3f} > {policy.max_error_rate:g}")
            if policy.max_p99_ms is not None and stats["p99_ms"] > policy.max_p99_ms:
                reasons.append(f"p99 {stats['p99_ms']:.1f} ms > {policy.max_p99_ms:g} ms")
            if not reasons:
                return None
            self._rollback_locked(
                f"canary version {version}: {' and '.join(reasons)} over the last "
                f"{stats['requests']} requests ({policy.window_s:g} s window)",
                RolloutAction.AUTO_ROLLBACK,
            )
            return self._events[-1]

    # status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            per_version = {}
            for v in self._versions:
                window = self._windows[v]
                window.trim(now - self.policy.window_s)
                per_version[str(v)] = {
                    "weight": self._weights.get(v, 0.0),
                    "stable_weight": self._stable.get(v, 0.0),
                    "canary": v in self.canaries,
                    "requests_total": window.total,
                    "server_errors_total": window.errors,
                    "window": window.stats(),
                }
            return {
                "model": self.model,
                "weights": {str(v): w for v, w in sorted(self._weights.items())},
                "stable_weights": {str(v): w for v, w in sorted(self._stable.items())},
                "policy": self.policy.to_dict(),
                "versions": per_version,
                "events": [e.to_dict() for e in self._events],
            }

    def snapshot(self) -> dict[str, Any]:
        """What to persist so that a restarted server keeps the split."""
        with self._lock:
            return {
                "weights": {str(v): w for v, w in self._weights.items()},
                "stable_weights": {str(v): w for v, w in self._stable.items()},
                "policy": self.policy.to_dict(),
            }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Apply a :meth:`snapshot`; versions that are no longer loaded are dropped.

        Raises :class:`UserError` (and changes nothing) when ``data`` is not a snapshot.
        """
        if not isinstance(data, Mapping) or "weights" not in data or "stable_weights" not in data:
            raise UserError("it is not an object with 'weights' and 'stable_weights'")
        weights = {v: w for v, w in parse_weights(data["weights"]).items() if v in self._versions}
        stable = {v: w for v, w in parse_weights(data["stable_weights"]).items() if v in self._versions}
        policy = RolloutPolicy.from_dict(data.get("policy") or {})
        with self._lock:
            if weights and sum(weights.values()) > 0:
                self._weights = weights
            if stable and sum(stable.values()) > 0:
                self._stable = stable
            self.policy = policy
            self._rebuild()
            self._event(RolloutAction.RESTORE, "restored from the saved rollout state")



def with_policy_overrides(policy: RolloutPolicy, overrides: Mapping[str, Any]) -> RolloutPolicy:
    """``policy`` with the fields in ``overrides`` replaced (validated like a new policy)."""
    return RolloutPolicy.from_dict({**policy.to_dict(), **overrides})


class RolloutClient:
    """Talks to a running server's rollout endpoints (what ``zhisuan rollout`` uses).

    The bearer token comes from ``token`` or ``$ZHISUAN_TOKEN``. Every failure — no server,
    a refused token, an unknown model — is a one-line :class:`~zhisuan.errors.UserError`.

    >>> RolloutClient("http://127.0.0.1:8000").set("resnet", {1: 90, 2: 10})  # doctest: +SKIP
    """

    def __init__(self, server: str, *, token: str | None = None, timeout_s: float = 10.0, transport: Any = None) -> None:
        import os

        from zhisuan.serve.config import TOKEN_ENV

        server = server.strip().rstrip("/")
        if not server.startswith(("http://", "https://")):
            server = "http://" + server
        self.server = server
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout_s = timeout_s
        self._transport = transport  # httpx.MockTransport in tests

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        from zhisuan.serve.config import TOKEN_ENV

        if not self.token:
            raise UserError(f"set {TOKEN_ENV} to the server's management token")
        url = f"{self.server}/v2/zhisuan/rollout/{path}"
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self._transport) as client:
                response = client.request(
                    method, url, json=dict(body) if body is not None else None,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the server at {self.server}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            raise UserError(f"{self.server} answered {response.status_code}: {message or response.text[:200]}")
        if not isinstance(data, dict):
            raise UserError(f"{self.server} did not answer with a JSON object; is it a zhisuan server?")
        return data

    def status(self, model: str) -> dict[str, Any]:
        return self._call("GET", _quote(model))

    def set(
        self, model: str, weights: Mapping[int, float] | None = None, *, policy: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if weights is not None:
            body["weights"] = {str(v): w for v, w in weights.items()}
        if policy:
            body["policy"] = dict(policy)
        if not body:
            raise UserError("give --weights and/or a threshold (--max-error-rate, --max-p99-ms, --window-s)")
        return self._call("POST", _quote(model), body)

    def promote(self, model: str, version: int) -> dict[str, Any]:
        return self._call("POST", f"{_quote(model)}/promote", {"version": int(version)})

    def rollback(self, model: str) -> dict[str, Any]:
        return self._call("POST", f"{_quote(model)}/rollback", {})


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
