"""Name maps: which tensor of a transformed graph carries the value of which tensor of its source.

Export, fusion and quantization rename and remove tensors, so layerwise tools that pair tensors
by name or position pair the wrong ones. Every zhisuan transformation (optimize passes, quantize,
convert) records a :class:`NameMap` from the *source* graph's tensor names to the *result*
graph's, and stores it in the result's ``metadata_props`` under :data:`NAME_MAP_KEY`, so that
``compare --layerwise`` can pair tensors correctly even across several steps.

Semantics: ``mapping[src] = dst`` means tensor ``dst`` of the result computes the same value as
tensor ``src`` of the source (up to numerical error of the transformation). A source tensor that
no longer exists (folded into a fused node) is absent from ``mapping``. Tensors whose names are
unchanged and still mean the same are recorded too (identity entries), so a missing key always
means "gone", never "unknown".

>>> a = NameMap({"x": "x", "conv_out": "bn_out", "bn_out": "bn_out"})
>>> b = NameMap({"x": "x", "bn_out": "relu_in"})
>>> a.then(b).mapping
{'x': 'x', 'conv_out': 'relu_in', 'bn_out': 'relu_in'}
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAME_MAP_KEY = "zhisuan.name_map"
_VERSION = 1
# Stored form 2: unchanged names as a list, renamed ones as pairs, zlib+base64 when that is
# smaller. Name maps of transformer graphs run to tens of KiB as plain JSON pairs; this keeps
# optimized files as small as onnxslim's. Form 1 (plain pairs) is still read.
_STORED_VERSION = 2


@dataclass(frozen=True)
class NameMap:
    """Source tensor name -> result tensor name. Compose with :meth:`then`."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    source_sha256: str | None = None  # sha256 of the source model file, when known

    @classmethod
    def identity(cls, names: Iterable[str], *, source_sha256: str | None = None) -> NameMap:
        return cls({n: n for n in names}, source_sha256)

    def then(self, later: NameMap) -> NameMap:
        """The map of applying ``self`` and then ``later`` (source of self -> result of later)."""
        composed = {src: later.mapping[mid] for src, mid in self.mapping.items() if mid in later.mapping}
        return NameMap(composed, self.source_sha256)

    def get(self, source_name: str) -> str | None:
        return self.mapping.get(source_name)

    def inverse(self) -> dict[str, list[str]]:
        """Result tensor -> every source tensor it stands for."""
        out: dict[str, list[str]] = {}
        for src, dst in self.mapping.items():
            out.setdefault(dst, []).append(src)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": _VERSION, "source_sha256": self.source_sha256, "mapping": dict(self.mapping)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NameMap:
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported name map version {data.get('version')!r}")
        return cls(dict(data["mapping"]), data.get("source_sha256"))


def encode_name_map(name_map: NameMap, *, implicit: Iterable[str] = ()) -> str:
    """The compact string stored in the metadata (see ``_STORED_VERSION``).

    ``implicit`` names (the graph's own inputs and outputs, which no transformation may rename)
    are left out when they map to themselves and restored by :func:`decode_name_map`.
    """
    skip = set(implicit)
    same = sorted(k for k, v in name_map.mapping.items() if k == v and k not in skip)
    kept_implicit = sorted(k for k in skip if name_map.mapping.get(k) == k)
    renamed = {k: v for k, v in sorted(name_map.mapping.items()) if k != v}
    body: dict[str, Any] = {"version": _STORED_VERSION, "same": same, "renamed": renamed}
    if name_map.source_sha256:
        body["source_sha256"] = name_map.source_sha256
    if kept_implicit:
        body["io"] = 1 if len(kept_implicit) == len(skip) else kept_implicit
    plain = json.dumps(body, separators=(",", ":"))
    packed = json.dumps(
        {"version": _STORED_VERSION, "zlib": base64.b64encode(zlib.compress(plain.encode(), 9)).decode()},
        separators=(",", ":"),
    )
    return packed if len(packed) < len(plain) else plain


def decode_name_map(text: str, *, implicit: Iterable[str] = ()) -> NameMap:
    """Inverse of :func:`encode_name_map` (same ``implicit`` names); also reads the plain form 1."""
    data = json.loads(text)
    if data.get("version") == _STORED_VERSION:
        if "zlib" in data:
            data = json.loads(zlib.decompress(base64.b64decode(data["zlib"])).decode())
        io = data.get("io")
        mapping = {n: n for n in (list(implicit) if io == 1 else (io or []))}
        mapping.update({n: n for n in data["same"]})
        mapping.update(data["renamed"])
        return NameMap(mapping, data.get("source_sha256"))
    return NameMap.from_dict(data)


def read_name_map(model: Any) -> NameMap | None:
    """The name map stored in an ``onnx.ModelProto``'s metadata, or None."""
    for prop in model.metadata_props:
        if prop.key == NAME_MAP_KEY:
            return decode_name_map(prop.value, implicit=_io_names(model))
    return None


def write_name_map(model: Any, name_map: NameMap) -> None:
    """Store ``name_map`` in the model's metadata (replacing an earlier one)."""
    for prop in list(model.metadata_props):
        if prop.key == NAME_MAP_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = NAME_MAP_KEY
    entry.value = encode_name_map(name_map, implicit=_io_names(model))


def _io_names(model: Any) -> list[str]:
    graph = getattr(model, "graph", None)
    if graph is None:
        return []
    return [v.name for v in graph.input] + [v.name for v in graph.output]
