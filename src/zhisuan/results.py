"""Results cross the API as frozen dataclasses; :class:`Record` gives them one ``to_dict``.

``to_dict`` is a field-by-field copy into JSON-ready data: nested records (anything with a
``to_dict``) become their dicts, tuples and lists become lists, mappings dicts, paths strings and
enums their values. A result that adds computed keys overrides ``to_dict`` and calls
``super().to_dict()`` (or :func:`plain`) for the fields.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Timing(Record):
...     latency_ms: float
...     samples: tuple[float, ...]
>>> Timing(1.5, (1.0, 2.0)).to_dict()
{'latency_ms': 1.5, 'samples': [1.0, 2.0]}
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["Record", "plain"]


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data (see the module docstring); other values are returned as they are."""
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class Record:
    """Mixin of result dataclasses: ``to_dict()`` copies every field with :func:`plain`."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
