"""A pipeline declared as data: :class:`PipelineSpec`, loaded from YAML or JSON, or built in Python.

Every key is checked when the spec is made: an unknown key, a value of the wrong type or out of
its range is a :class:`SpecError` (a :class:`~zhisuan.errors.UserError`) whose message starts with
the key's path, e.g. ``sources[1].url: must be a non-empty string``. Defaults follow
docs/video.md ("Pipeline file").

>>> spec = PipelineSpec.from_dict({"sources": [{"url": "bikes.mp4"}], "batch": {"max_batch": 4}})
>>> spec.sources[0].id, spec.sources[0].is_live, spec.batch.max_batch, spec.model
('bikes', False, 4, 'yolov3-tiny')
>>> PipelineSpec.from_dict({"sources": [{"url": "a.mp4", "lop": True}]})
Traceback (most recent call last):
...
zhisuan.pipeline.spec.SpecError: sources[0]: unknown key 'lop'; the keys are: id, url, live, loop, ...
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from zhisuan.errors import UserError
from zhisuan.results import Record

__all__ = [
    "ANCHORS",
    "DEFAULT_MODEL",
    "LIVE_SCHEMES",
    "SINK_KEYS",
    "TRACKERS",
    "AnalyticsSpec",
    "BatchSpec",
    "DetectSpec",
    "LineSpec",
    "PipelineSpec",
    "SinkSpec",
    "SourceSpec",
    "SpecError",
    "TrackSpec",
    "ZoneSpec",
    "load_spec",
    "source_kind",
]

DEFAULT_MODEL = "yolov3-tiny"
#: URL schemes of network streams: live (keep-latest queue, reconnect) unless the spec says otherwise.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "tcp", "udp", "srt")
TRACKERS = ("bytetrack", "sort", "none")
#: Keys each sink kind takes (``kind`` aside) and which of them are required.
SINK_KEYS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType({
    "jsonl": (("path",), ("path",)),
    "video": (("path",), ("path",)),
    "mqtt": (("host", "port", "topic"), ("host",)),
    "webhook": (("url",), ("url",)),
    "metrics": (("port",), ()),
})
HWACCELS = ("auto", "none", "cuda", "vaapi", "qsv", "drm", "videotoolbox", "d3d11va", "dxva2", "vdpau", "amf")
_MAX_SPEC_BYTES = 4 << 20
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_CAMERA = re.compile(r"^(/dev/video\d+|camera:\d+|v4l2://.+)$")


class SpecError(UserError):
    """A bad pipeline spec; ``path`` is the key path (``sources[1].url``), empty for the whole spec."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def under(self, prefix: str) -> SpecError:
        """The same error one level down: ``prefix`` joined in front of the path."""
        if not self.path:
            return SpecError(prefix, self.message)
        joined = f"{prefix}{self.path}" if self.path.startswith("[") else f"{prefix}.{self.path}"
        return SpecError(joined, self.message)


def source_kind(url: str) -> str:
    """``network`` (a URL with a stream scheme), ``camera`` (/dev/videoN, camera:N, v4l2://...),
    ``folder`` (an existing directory of images) or ``file`` (anything else: a video file).

    >>> source_kind("rtsp://127.0.0.1:8554/live"), source_kind("/dev/video0"), source_kind("bikes.mp4")
    ('network', 'camera', 'file')
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if _CAMERA.match(url):
        return "camera"
    if scheme in LIVE_SCHEMES:
        return "network"
    if scheme not in ("", "file"):
        raise SpecError("url", f"{url!r}: unknown scheme {scheme!r}; use a file, a folder, /dev/videoN or "
                               f"one of {', '.join(s + '://' for s in LIVE_SCHEMES)}")
    return "folder" if Path(url.removeprefix("file://")).is_dir() else "file"


# ---------------------------------------------------------------------------------------------
# Value checks: each raises SpecError(key, ...) naming the field; from_dict adds the path above it.


def _str(key: str, value: Any, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise SpecError(key, f"must be a non-empty string, got {_show(value)}")


def _opt_str(key: str, value: Any) -> None:
    if value is not None:
        _str(key, value)


def _bool(key: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, bool):
        raise SpecError(key, f"must be true or false{' or null' if optional else ''}, got {_show(value)}")


def _int(key: str, value: Any, low: int, high: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        null = " or null" if optional else ""
        raise SpecError(key, f"must be an integer in {low}..{high}{null}, got {_show(value)}")


def _num(key: str, value: Any, low: float, high: float, *, optional: bool = False, open_low: bool = False) -> None:
    if optional and value is None:
        return
    ok = (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
          and (value > low if open_low else value >= low) and value <= high)
    if not ok:
        lo = f"above {low:g}" if open_low else f"at least {low:g}"
        raise SpecError(key, f"must be a number {lo} and at most {high:g}, got {_show(value)}")


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise SpecError(key, f"{_show(value)} is not one of: {', '.join(choices)}")


def _point(key: str, value: Any) -> tuple[float, float]:
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2
            or not all(not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) for v in value)):
        raise SpecError(key, f"must be a point [x, y] of two finite numbers, got {_show(value)}")
    return float(value[0]), float(value[1])


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value) if isinstance(value, float) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _unique(key: str, names: Sequence[str], what: str, field_name: str = "name") -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise SpecError(f"{key}[{i}].{field_name}", f"{what} {name!r} is used twice; each needs its own")
        seen.add(name)


# ---------------------------------------------------------------------------------------------
# The sections


class _Section:
    """``from_dict``: unknown keys refused, nested sections built, errors prefixed with their path."""

    _nested: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise SpecError("", f"must be a mapping of keys ({', '.join(cls.keys())}), got {_show(data)}")
        known = cls.keys()
        for key in data:
            if not isinstance(key, str) or key not in known:
                raise SpecError("", f"unknown key {key!r}; the keys are: {', '.join(known)}")
        values = dict(data)
        for key, build in cls._nested.items():
            if key in values:
                try:
                    values[key] = build(values[key])
                except SpecError as exc:
                    raise exc.under(key) from None
        return cls(**values)


def _sequence_of(section: Any, *, what: str) -> Any:
    def build(items: Any) -> tuple[Any, ...]:
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
            raise SpecError("", f"must be a list of {what}, got {_show(items)}")
        built = []
        for i, item in enumerate(items):
            try:
                built.append(section.from_dict(item))
            except SpecError as exc:
                raise exc.under(f"[{i}]") from None
        return tuple(built)

    return build


@dataclass(frozen=True)
class BatchSpec(_Section, Record):
    """Batching across streams, as nvstreammux: a batch leaves when it holds ``max_batch`` frames or
    ``max_wait_ms`` after its first frame arrived, whichever comes first."""

    max_batch: int = 8
    max_wait_ms: float = 20.0

    def __post_init__(self) -> None:
        _int("max_batch", self.max_batch, 1, 1024)
        _num("max_wait_ms", self.max_wait_ms, 0, 60_000)


@dataclass(frozen=True)
class SourceSpec(_Section, Record):
    """One stream. ``live`` None: decided by the URL (network streams and cameras are live).

    Live streams use a keep-latest queue that drops the oldest frame when the pipeline falls
    behind, and reconnect with exponential back-off (1 s, 2 s, ... up to ``reconnect_max_s``;
    ``reconnect_attempts`` None: for ever). Files never drop a frame; ``loop`` replays them.
    ``timeout_s`` bounds every network open and read, so a dead stream never hangs the decoder.
    ``listen``: wait for a sender to push the stream to this address (``rtsp://`` as ``ffmpeg -f rtsp``
    publishes, ``tcp://``) instead of connecting to a server; after the sender leaves, listen again.
    ``hwaccel``: ``auto`` tries FFmpeg's CUDA decoder when this FFmpeg has one and falls back to
    software; the decoder used is in the summary. ``fps``: frame rate given to an image folder.
    """

    url: str
    id: str | None = None
    live: bool | None = None
    loop: bool = False
    reconnect: bool = True
    reconnect_attempts: int | None = None
    reconnect_max_s: float = 10.0
    timeout_s: float = 10.0
    hwaccel: str = "auto"
    format: str | None = None
    fps: float = 25.0
    listen: bool = False

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return ("id", "url", "live", "loop", "reconnect", "reconnect_attempts", "reconnect_max_s", "timeout_s",
                "listen", "hwaccel", "format", "fps")

    def __post_init__(self) -> None:
        _str("url", self.url)
        if self.id is None:
            object.__setattr__(self, "id", _default_id(self.url))
        _str("id", self.id)
        if not _ID.match(self.id or ""):
            raise SpecError("id", f"{self.id!r} must be 1-64 letters, digits, '_', '-', '.' or ':' "
                                  "(it names the stream in events, metrics and files)")
        _bool("live", self.live, optional=True)
        _bool("loop", self.loop)
        _bool("reconnect", self.reconnect)
        _int("reconnect_attempts", self.reconnect_attempts, 1, 10**6, optional=True)
        _num("reconnect_max_s", self.reconnect_max_s, 0, 3600, open_low=True)
        _num("timeout_s", self.timeout_s, 0, 3600, open_low=True)
        _choice("hwaccel", self.hwaccel, HWACCELS)
        _opt_str("format", self.format)
        _num("fps", self.fps, 0, 1000, open_low=True)
        kind = source_kind(self.url)  # an unknown scheme is an error now, not when the stream opens
        _bool("listen", self.listen)
        if self.listen and not (kind == "network" and self.url.lower().startswith(("rtsp://", "tcp://"))):
            raise SpecError("listen", "works for rtsp:// and tcp:// URLs only (a sender pushes the stream there)")

    @property
    def kind(self) -> str:
        return source_kind(self.url)

    @property
    def is_live(self) -> bool:
        return self.live if self.live is not None else self.kind in ("network", "camera")


def _default_id(url: str) -> str:
    stem = Path(url.split("?", 1)[0].rstrip("/")).stem or "stream"
    cleaned = re.sub(r"[^A-Za-z0-9_.:-]", "_", stem).lstrip("_.:-")[:64]
    return cleaned or "stream"


@dataclass(frozen=True)
class DetectSpec(_Section, Record):
    """Detector post-processing: class-aware NMS, boxes kept above ``score_threshold``.
    ``classes``: keep only these class names (None: all)."""

    score_threshold: float = 0.25
    iou: float = 0.45
    classes: tuple[str, ...] | None = None
    max_det: int = 300

    def __post_init__(self) -> None:
        _num("score_threshold", self.score_threshold, 0, 1)
        _num("iou", self.iou, 0, 1)
        if self.classes is not None:
            if isinstance(self.classes, str) or not isinstance(self.classes, Sequence) or not self.classes:
                raise SpecError("classes", f"must be a non-empty list of class names or null, got {_show(self.classes)}")
            for i, name in enumerate(self.classes):
                _str(f"classes[{i}]", name)
            object.__setattr__(self, "classes", tuple(self.classes))
        _int("max_det", self.max_det, 1, 100_000)


@dataclass(frozen=True)
class TrackSpec(_Section, Record):
    """The tracker (``bytetrack``, ``sort`` or ``none``) and its own settings, passed on to
    :class:`zhisuan.pipeline.track.TrackerSpec` (which checks them; its fields are the keys)."""

    tracker: str = "bytetrack"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> TrackSpec:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise SpecError("", f"must be a mapping with key 'tracker', got {_show(data)}")
        options = {k: v for k, v in data.items() if k != "tracker"}
        known = _tracker_keys()
        for key in options:
            if not isinstance(key, str) or (known is not None and key not in known) or key == "frame_rate":
                keys = ", ".join(k for k in ("tracker", *(known or ())) if k != "frame_rate")
                raise SpecError("", f"unknown key {key!r}; the keys are: {keys}")
        spec = cls(tracker=data.get("tracker", "bytetrack"), options=options)
        spec.tracker_spec(25.0)  # the track module's own checks, now rather than when a stream starts
        return spec

    def __post_init__(self) -> None:
        _choice("tracker", self.tracker, TRACKERS)
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def tracker_spec(self, frame_rate: float) -> Any:
        """The track module's ``TrackerSpec`` for a stream of ``frame_rate``; None when it is absent."""
        try:
            from zhisuan.pipeline.track import TrackerSpec
        except ImportError:
            return None
        try:
            return TrackerSpec(tracker=self.tracker, frame_rate=frame_rate, **self.options)
        except SpecError:
            raise
        except UserError as exc:  # its messages start with "track.<key>:"
            placed = re.match(r"^track\.(\w+): (.*)$", str(exc), re.DOTALL)
            if placed:
                raise SpecError(placed.group(1), placed.group(2)) from None
            raise SpecError("", str(exc).removeprefix("track: ")) from None

    def to_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker, **dict(self.options)}


def _tracker_keys() -> tuple[str, ...] | None:
    try:
        from zhisuan.pipeline.track import TrackerSpec
    except ImportError:
        return None
    return tuple(f.name for f in fields(TrackerSpec) if f.name != "tracker")


#: Which point of a box counts for lines and zones (supervision's anchors); bottom centre by default.
ANCHORS = ("bottom_center", "center", "top_center", "center_left", "center_right", "top_left", "top_right",
           "bottom_left", "bottom_right")


def _anchor(key: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    _choice(key, value, ANCHORS)


@dataclass(frozen=True)
class LineSpec(_Section, Record):
    """A counting line from ``start`` to ``end`` in frame pixels; crossing it is ``line_in`` or
    ``line_out``. ``anchor`` None: the analytics block's."""

    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    anchor: str | None = None

    def __post_init__(self) -> None:
        _str("name", self.name)
        object.__setattr__(self, "start", _point("start", self.start))
        object.__setattr__(self, "end", _point("end", self.end))
        if self.start == self.end:
            raise SpecError("end", "must differ from start (a line needs two distinct points)")
        _anchor("anchor", self.anchor, optional=True)


@dataclass(frozen=True)
class ZoneSpec(_Section, Record):
    """A polygon zone in frame pixels (three points or more); occupancy and dwell time are counted."""

    name: str
    polygon: tuple[tuple[float, float], ...]
    anchor: str | None = None

    def __post_init__(self) -> None:
        _str("name", self.name)
        if isinstance(self.polygon, str) or not isinstance(self.polygon, Sequence) or len(self.polygon) < 3:
            raise SpecError("polygon", f"must be a list of 3 or more points [x, y], got {_show(self.polygon)}")
        object.__setattr__(self, "polygon", tuple(_point(f"polygon[{i}]", p) for i, p in enumerate(self.polygon)))
        _anchor("anchor", self.anchor, optional=True)


@dataclass(frozen=True)
class AnalyticsSpec(_Section, Record):
    """Counting lines and zones (their names key the counts, so every name is unique), the box
    ``anchor`` they test, and ``lost_after_s``: how long a track may be missing before it has
    left the zones it was in. Passed on to :class:`zhisuan.pipeline.analytics.AnalyticsSpec`."""

    lines: tuple[LineSpec, ...] = ()
    zones: tuple[ZoneSpec, ...] = ()
    anchor: str = "bottom_center"
    lost_after_s: float = 1.0
    _nested: ClassVar[Mapping[str, Any]] = {
        "lines": _sequence_of(LineSpec, what="lines"), "zones": _sequence_of(ZoneSpec, what="zones")}

    def __post_init__(self) -> None:
        for key, kind in (("lines", LineSpec), ("zones", ZoneSpec)):
            items = getattr(self, key)
            if isinstance(items, str) or not isinstance(items, Sequence) or not all(isinstance(i, kind) for i in items):
                raise SpecError(key, f"must be a list of {kind.__name__}")
            object.__setattr__(self, key, tuple(items))
        _anchor("anchor", self.anchor)
        _num("lost_after_s", self.lost_after_s, 0, 3600)
        _unique("lines", [line.name for line in self.lines], "line name")
        names = {line.name for line in self.lines}
        for i, zone in enumerate(self.zones):
            if zone.name in names:
                raise SpecError(f"zones[{i}].name", f"{zone.name!r} is also a line's name; counts are keyed by name")
            names.add(zone.name)

    @property
    def empty(self) -> bool:
        return not self.lines and not self.zones


@dataclass(frozen=True)
class SinkSpec(Record):
    """Where results go: ``kind`` and that kind's keys (:data:`SINK_KEYS`); see docs/video.md."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> SinkSpec:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise SpecError("", f"must be a mapping with a 'kind' ({', '.join(SINK_KEYS)}), got {_show(data)}")
        if "kind" not in data:
            raise SpecError("", f"has no 'kind'; choose one of: {', '.join(SINK_KEYS)}")
        return cls(kind=data["kind"], options={k: v for k, v in data.items() if k != "kind"})

    def __post_init__(self) -> None:
        _choice("kind", self.kind, tuple(SINK_KEYS))
        allowed, required = SINK_KEYS[self.kind]
        for key in self.options:
            if key not in allowed:
                raise SpecError("", f"unknown key {key!r} for a {self.kind} sink; its keys are: kind, {', '.join(allowed)}")
        for key in required:
            if key not in self.options:
                raise SpecError("", f"a {self.kind} sink needs {key!r}")
        o = self.options
        for key in ("path", "host", "topic", "url"):
            if key in o:
                _str(key, o[key])
        if "port" in o:
            _int("port", o["port"], 0 if self.kind == "metrics" else 1, 65535, optional=self.kind == "metrics")
        if "url" in o and not str(o["url"]).startswith(("http://", "https://")):
            raise SpecError("url", f"{o['url']!r} must be an http:// or https:// URL")
        object.__setattr__(self, "options", MappingProxyType(dict(o)))

    def to_dict(self) -> dict[str, Any]:
        """The sink's dict as ``zhisuan.pipeline.sinks.make_sink`` takes it."""
        return {"kind": self.kind, **dict(self.options)}


@dataclass(frozen=True)
class PipelineSpec(_Section, Record):
    """A whole pipeline: the model and where it runs, its sources, and the stages after the model."""

    sources: tuple[SourceSpec, ...]
    name: str = "pipeline"
    model: str = DEFAULT_MODEL
    runtime: str = "onnxruntime"
    device: str = "cpu"
    threads: int | None = None
    batch: BatchSpec = field(default_factory=BatchSpec)
    queue_depth: int = 8
    detect: DetectSpec = field(default_factory=DetectSpec)
    track: TrackSpec = field(default_factory=TrackSpec)
    analytics: AnalyticsSpec = field(default_factory=AnalyticsSpec)
    sinks: tuple[SinkSpec, ...] = ()
    _nested: ClassVar[Mapping[str, Any]] = {
        "sources": _sequence_of(SourceSpec, what="sources"),
        "batch": BatchSpec.from_dict,
        "detect": DetectSpec.from_dict,
        "track": TrackSpec.from_dict,
        "analytics": AnalyticsSpec.from_dict,
        "sinks": _sequence_of(SinkSpec, what="sinks"),
    }

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return ("name", "model", "runtime", "device", "threads", "batch", "queue_depth", "sources", "detect",
                "track", "analytics", "sinks")

    @classmethod
    def from_dict(cls, data: Any) -> PipelineSpec:
        if isinstance(data, Mapping) and "sources" not in data:
            raise SpecError("sources", "is missing; a pipeline needs at least one source")
        return super().from_dict(data)

    def __post_init__(self) -> None:
        from zhisuan.runtime import backend_names

        _str("name", self.name)
        _str("model", self.model)
        if self.runtime is None:
            raise SpecError("runtime", "is empty; YAML reads a bare null as nothing: write runtime: \"null\" "
                                       "(in quotes) for the null backend")
        _choice("runtime", self.runtime, backend_names())
        _str("device", self.device)
        _int("threads", self.threads, 1, 1024, optional=True)
        _int("queue_depth", self.queue_depth, 1, 4096)
        for key, kind in (("batch", BatchSpec), ("detect", DetectSpec), ("track", TrackSpec),
                          ("analytics", AnalyticsSpec)):
            if not isinstance(getattr(self, key), kind):
                raise SpecError(key, f"must be a {kind.__name__}, got {type(getattr(self, key)).__name__}")
        for key, kind in (("sources", SourceSpec), ("sinks", SinkSpec)):
            items = getattr(self, key)
            if isinstance(items, str) or not isinstance(items, Sequence):
                raise SpecError(key, f"must be a list, got {_show(items)}")
            for i, item in enumerate(items):
                if not isinstance(item, kind):
                    raise SpecError(f"{key}[{i}]", f"must be a {kind.__name__}, got {type(item).__name__}")
            object.__setattr__(self, key, tuple(items))
        if not self.sources:
            raise SpecError("sources", "is empty; a pipeline needs at least one source")
        _unique("sources", [s.id or "" for s in self.sources], "stream id", "id")
        if sum(1 for s in self.sinks if s.kind == "metrics") > 1:
            raise SpecError("sinks", "has two metrics sinks; one serves every stream")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "model": self.model, "runtime": self.runtime, "device": self.device,
            "threads": self.threads, "batch": self.batch.to_dict(), "queue_depth": self.queue_depth,
            "sources": [s.to_dict() for s in self.sources], "detect": self.detect.to_dict(),
            "track": self.track.to_dict(), "analytics": self.analytics.to_dict(),
            "sinks": [s.to_dict() for s in self.sinks],
        }


def load_spec(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Read a pipeline file: ``.json`` as JSON, ``.yaml`` / ``.yml`` (or anything else) as YAML
    (a superset of JSON). A file that cannot be read or parsed is a :class:`UserError` naming it.

    ``overrides``: top-level keys that replace the file's before it is checked (the command line's
    sources, model, runtime), so a file may leave out what the command line gives.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pipeline file not found: {path}")
    if path.stat().st_size > _MAX_SPEC_BYTES:
        raise UserError(f"{path}: a pipeline file over 4 MiB is not one; refusing to read it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data = _parse(path, text)
    if overrides and isinstance(data, Mapping):
        data = {**data, **overrides}
    elif overrides and data is None:  # an empty file: everything from the command line
        data = dict(overrides)
    try:
        return PipelineSpec.from_dict(data)
    except SpecError as exc:
        raise SpecError(exc.path, f"{exc.message} (in {path})") from None


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except RecursionError:
            raise UserError(f"{path} nests deeper than a pipeline file can") from None
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{path} nests deeper than a pipeline file can") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path} is not valid YAML{where}: {problem}") from None
