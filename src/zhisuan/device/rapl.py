"""CPU package energy from RAPL through the Linux powercap interface (``/sys/class/powercap``).

Each package domain (``intel-rapl:0``, ``intel-rapl:1``; AMD CPUs use the same name) has a
cumulative ``energy_uj`` counter that wraps at ``max_energy_range_uj``. Power is the energy
difference between two reads divided by the time between them. Since Linux 5.10 ``energy_uj``
is readable by root only (CVE-2020-8694), so "permission denied" is the common reason here.

>>> meter = RaplMeter("/sys/class/powercap")  # doctest: +SKIP
>>> reading = meter.read()  # doctest: +SKIP
>>> reading.energy_j, reading.reason  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")  # top-level zones; "intel-rapl:0:1" are sub-zones


@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str  # "package-0", ...
    max_energy_range_uj: int


@dataclass(frozen=True)
class RaplReading:
    """Energy summed over package domains since the meter opened, and power since the last read."""

    energy_j: float | None
    power_w: float | None
    reason: str | None  # why energy_j / power_w are None


def find_package_domains(
    root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
) -> tuple[list[RaplDomain], str | None]:
    """The package domains under ``root``, or an empty list and the reason there are none."""
    root = Path(root)
    if not root.is_dir():
        return [], f"no RAPL domain: {root} does not exist (no powercap driver, or a VM)"
    domains = []
    for zone in sorted(root.iterdir()):
        if not _PACKAGE_ZONE.match(zone.name):
            continue
        name = _read_text(zone / "name") or zone.name
        if not name.startswith("package"):  # "psys" (whole platform) would double count
            continue
        try:
            max_range = int(_read_text(zone / "max_energy_range_uj") or "0")
        except ValueError:
            max_range = 0
        domains.append(RaplDomain(zone, name, max_range))
    if not domains:
        return [], f"no RAPL package domain in {root}"
    return domains, None


class RaplMeter:
    """Turns the wrapping ``energy_uj`` counters into energy since opening and power between reads.

    ``clock`` is injectable so tests control the time between reads.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.domains, self.reason = find_package_domains(root)
        self._last: list[int] | None = None
        self._last_t = 0.0
        self._energy_uj = 0
        if self.domains:
            first = self._read_counters()
            if isinstance(first, str):
                self.reason = first
                self.domains = []
            else:
                self._last, self._last_t = first, self._clock()

    @property
    def available(self) -> bool:
        return not self.reason

    def read(self) -> RaplReading:
        if self.reason or self._last is None:
            return RaplReading(None, None, self.reason)
        counters = self._read_counters()
        if isinstance(counters, str):
            return RaplReading(None, None, counters)
        now = self._clock()
        delta_uj = sum(
            _wrapped_delta(old, new, d.max_energy_range_uj)
            for old, new, d in zip(self._last, counters, self.domains, strict=True)
        )
        dt = now - self._last_t
        self._energy_uj += delta_uj
        self._last, self._last_t = counters, now
        energy_j = self._energy_uj / 1e6
        if dt <= 0:
            return RaplReading(energy_j, None, "no time passed since the previous RAPL read")
        return RaplReading(energy_j, delta_uj / 1e6 / dt, None)

    def _read_counters(self) -> list[int] | str:
        counters = []
        for domain in self.domains:
            path = domain.path / "energy_uj"
            try:
                counters.append(int(path.read_text().strip()))
            except PermissionError:
                return f"RAPL not readable: permission denied on {path} (root only since Linux 5.10)"
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                if exc.errno == errno.ENOENT:
                    why = "no such file"
                return f"RAPL not readable: {why} on {path}"
            except ValueError:
                return f"RAPL not readable: {path} does not hold an integer"
        return counters


def _wrapped_delta(old: int, new: int, max_range: int) -> int:
    """Energy between two reads of a counter that restarts at 0 after ``max_range``."""
    if new >= old:
        return new - old
    if max_range <= 0:  # unknown range: the step across the wrap is lost, not made up
        return new
    return new + (max_range - old)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
