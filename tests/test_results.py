from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from zhisuan.progress import Recorder, no_progress
from zhisuan.results import Record, plain


class Kind(enum.StrEnum):
    A = "a"


@dataclass(frozen=True)
class Inner(Record):
    value_ms: float


@dataclass(frozen=True)
class Outer(Record):
    path: Path
    kind: Kind
    inner: Inner
    inners: tuple[Inner, ...]
    table: dict[str, tuple[int, ...]] = field(default_factory=dict)
    note: str | None = None


def test_to_dict_copies_every_field_as_json_data() -> None:
    outer = Outer(Path("/x/y"), Kind.A, Inner(1.5), (Inner(2.0),), {"k": (1, 2)})
    assert outer.to_dict() == {"path": "/x/y", "kind": "a", "inner": {"value_ms": 1.5},
                               "inners": [{"value_ms": 2.0}], "table": {"k": [1, 2]}, "note": None}
    assert plain([outer.inner, (3,)]) == [{"value_ms": 1.5}, [3]]


def test_progress_protocol() -> None:
    seen = Recorder()
    seen("a")
    seen("b", done=2, total=None)
    assert seen.events == [("a", None, None), ("b", 2, None)]
    assert no_progress("x", done=1, total=2) is None
