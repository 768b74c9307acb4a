"""Find the device providers (one module per kind, discovered), list devices, pick one.

A module of this package that exposes ``PROVIDER`` is a device kind; nothing is registered by
hand. Kinds whose provider has ``default = False`` (the NULL device) appear only when named.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache

from zhisuan.device.base import BackendStatusLike, DeviceInfo, DeviceProvider, Discovery, backends_reaching
from zhisuan.errors import UserError
from zhisuan.results import Record

_ORDER = {"cpu": 0, "cuda": 1, "null": 99}


@cache
def _discovered() -> dict[str, DeviceProvider]:
    package = importlib.import_module("zhisuan.device")
    found: dict[str, DeviceProvider] = {}
    for mod in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"zhisuan.device.{mod.name}")
        provider = getattr(module, "PROVIDER", None)
        if provider is not None:
            found[provider.kind] = provider
    return dict(sorted(found.items(), key=lambda kv: (_ORDER.get(kv[0], 50), kv[0])))


def device_kinds() -> list[str]:
    """Every device kind zhisuan knows, including those listed only on request."""
    return list(_discovered())


def select_providers(kinds: Sequence[str] | None = None) -> list[DeviceProvider]:
    """The providers of ``kinds``; ``None`` means every kind shown by default."""
    providers = _discovered()
    if kinds is None:
        return [p for p in providers.values() if p.default]
    unknown = [k for k in kinds if k not in providers]
    if unknown:
        raise UserError(f"unknown device kind {unknown[0]!r}; choose from: {', '.join(providers)}")
    return [providers[k] for k in dict.fromkeys(kinds)]


@dataclass(frozen=True)
class DeviceList(Record):
    """The devices found, and for each kind that found none, why."""

    devices: tuple[DeviceInfo, ...]
    reasons: dict[str, str] = field(default_factory=dict)  # kind -> why it has no devices


_backend_source: Callable[[], Sequence[BackendStatusLike]] | None = None


def set_backend_source(source: Callable[[], Sequence[BackendStatusLike]] | None) -> None:
    """Who :func:`list_devices` asks for the runtimes when it is given none.

    The device layer sits beside ``zhisuan.runtime`` and never imports it: the runtime package
    registers its ``backend_status`` here when it is imported. ``None`` unregisters.
    """
    global _backend_source
    _backend_source = source


def list_devices(
    *,
    kinds: Sequence[str] | None = None,
    providers: Sequence[DeviceProvider] | None = None,
    backends: bool = True,
    backend_statuses: Sequence[BackendStatusLike] | None = None,
) -> DeviceList:
    """Every device of ``kinds`` (or of ``providers``), with the runtime backends that reach each.

    ``backend_statuses`` are the runtimes' statuses (``zhisuan.runtime.backend_status()``); when
    None they come from the source registered with :func:`set_backend_source` (the runtime
    package, once imported), and no backends are attached while none is. ``backends=False``
    skips asking the runtimes (which imports them, a second or more).

    >>> from zhisuan.device import list_devices
    >>> list_devices(backends=False).devices[0].kind
    'cpu'
    """
    chosen = list(providers) if providers is not None else select_providers(kinds)
    discoveries: list[Discovery] = [p.discover() for p in chosen]
    if backends and backend_statuses is None and _backend_source is not None:
        backend_statuses = _backend_source()
    devices = []
    reasons = {}
    for found in discoveries:
        if not found.devices:
            reasons[found.kind] = found.reason or "no device found"
        for device in found.devices:
            if backend_statuses:
                device = replace(
                    device, backends=backends_reaching(device.kind, device.index, backend_statuses)
                )
            devices.append(device)
    return DeviceList(tuple(devices), reasons)


def find_device(
    selector: str, devices: Sequence[DeviceInfo], reasons: dict[str, str] | None = None
) -> DeviceInfo:
    """Pick a device by its position in ``zhisuan device list`` ("1"), its id ("cuda:0", "cpu"),
    or a case-insensitive part of its name ("H100"). ``reasons`` (kind -> why it has no device)
    makes the error say why, e.g. for "cuda" on a machine without a driver."""
    listing = ", ".join(f"{i}={d.id} ({d.name})" for i, d in enumerate(devices)) or "none"
    text = selector.strip()
    if text.lstrip("-").isdigit():
        position = int(text)
        if not 0 <= position < len(devices):
            raise UserError(f"no device {position}: there are {len(devices)} devices ({listing})")
        return devices[position]
    key = text.lower()
    by_id = [d for d in devices if d.id == key or (":" not in key and d.kind == key)]
    if len(by_id) == 1:
        return by_id[0]
    matches = by_id or [d for d in devices if key in d.name.lower()]
    if not matches:
        kind = key.partition(":")[0]
        if reasons and kind in reasons:
            raise UserError(f"no {kind} device: {reasons[kind]}")
        raise UserError(f"no device matches {selector!r}; devices: {listing}")
    if len(matches) > 1:
        names = ", ".join(f"{d.id} ({d.name})" for d in matches)
        raise UserError(
            f"{selector!r} matches {len(matches)} devices: {names}; use an index or id such as {matches[0].id}"
        )
    return matches[0]
