"""What flows between the stages of a pipeline: frames in, frame results and events out.

A *stream* is one source (a video file, an image folder, a camera, an RTSP/HTTP/TCP URL) with an
id. Its decoder yields :class:`Frame` objects; the batcher groups frames of several streams into
one inference call; postprocessing attaches detections (a ``supervision.Detections``: ``xyxy`` in
the frame's own pixels, ``confidence``, ``class_id``, ``data["class_name"]``); the tracker sets
``tracker_id``; analytics turn tracked detections into :class:`Event` objects; sinks receive
:class:`FrameResult` objects in frame order per stream.

Times: ``pts_s`` is the frame's presentation time on the stream's own clock (seconds from the
stream's start); ``decoded_at_s`` is ``time.perf_counter()`` when the frame left the decoder, the
origin of its end-to-end latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    import supervision as sv

__all__ = ["Event", "EventKind", "Frame", "FrameResult", "Sink"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded picture of one stream."""

    stream_id: str
    index: int  # frame number within the stream, from 0, counting dropped frames too
    pts_s: float
    image: np.ndarray  # H x W x 3, uint8, RGB
    decoded_at_s: float

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


EventKind = Literal["line_in", "line_out", "zone_enter", "zone_exit"]


@dataclass(frozen=True)
class Event:
    """Something a tracked object did: crossed a counting line, entered or left a zone."""

    kind: EventKind
    stream_id: str
    frame_index: int
    pts_s: float
    track_id: int
    class_id: int
    class_name: str
    box_xyxy: tuple[float, float, float, float]
    where: str  # the line's or zone's name from the pipeline file
    dwell_s: float | None = None  # zone_exit: time spent inside, on the stream clock

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stream_id": self.stream_id,
            "frame_index": self.frame_index,
            "pts_s": round(self.pts_s, 6),
            "track_id": self.track_id,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "box_xyxy": [round(v, 2) for v in self.box_xyxy],
            "where": self.where,
            "dwell_s": None if self.dwell_s is None else round(self.dwell_s, 6),
        }


@dataclass(eq=False)
class FrameResult:
    """A frame after the model and the analytics stages; filled in stage by stage."""

    frame: Frame
    detections: sv.Detections | None = None
    events: list[Event] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)  # seconds spent per stage for this frame
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # line/zone name -> {"in": n, ...}

    @property
    def stream_id(self) -> str:
        return self.frame.stream_id


class Sink(Protocol):
    """Where results go. ``write`` is called in frame order per stream, from one thread."""

    def open(self) -> None: ...

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...
