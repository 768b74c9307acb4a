"""The pipeline engine: stages as threads joined by bounded queues.

::

    decode (one thread per stream) -> preprocess (one per stream) -> batch (across streams)
        -> infer -> postprocess -> track -> analytics -> sinks

Every queue is bounded (``queue_depth`` frames; two batches between batch and infer), so a source
faster than inference never grows memory: files block their decoder (back-pressure), live sources
drop their oldest frame (counted). Decoding, tracking and the sinks run in their own threads and
overlap inference. Each stage is a single thread (per stream for the first two), so every queue is
FIFO and sinks get each stream's results in frame order. Each frame carries the seconds every
stage spent on it in ``FrameResult.stage_s`` (``infer`` is the whole batch's call).

A sink with an ``attach(pipeline)`` method is handed the pipeline before ``open``, so it can read
what no frame carries (:meth:`Pipeline.queue_sizes`, :meth:`Pipeline.snapshot`, each source's
drops and reconnects), e.g. when Prometheus scrapes.

A stage that raises stops the whole pipeline: the sources stop, the queues close, and
:meth:`Pipeline.run` raises one :class:`~zhisuan.errors.UserError` naming the stage.
:meth:`Pipeline.stop` (or Ctrl-C in :meth:`run`) ends the sources; frames in flight still reach
the sinks, which are then closed.

>>> spec = PipelineSpec.from_dict({"sources": [{"url": "bikes.mp4"}], "track": {"tracker": "none"}})  # doctest: +SKIP
>>> with Pipeline(spec) as pipe:            # doctest: +SKIP
...     summary = pipe.run()
>>> summary.frames, summary.fps            # doctest: +SKIP
(250, 61.3)
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.pipeline.batcher import Batcher
from zhisuan.pipeline.detector import Detector
from zhisuan.pipeline.frames import FrameResult, Sink
from zhisuan.pipeline.sources import END, Decoded, FrameQueue, Source, SourceStats
from zhisuan.pipeline.spec import PipelineSpec
from zhisuan.results import Record

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime

__all__ = ["STAGES", "Pipeline", "PipelineSnapshot", "PipelineSummary", "StreamSnapshot", "StreamSummary", "run_pipeline"]

#: The stages, in order; the keys of ``FrameResult.stage_s``.
STAGES = ("decode", "preprocess", "batch", "infer", "postprocess", "track", "analytics", "sink")
#: Latencies kept per stream for the percentiles (the most recent ones).
LATENCY_WINDOW = 100_000
_POLL_S = 0.05


@dataclass(frozen=True)
class StreamSummary(Record):
    """One stream over the run."""

    stream_id: str
    url: str
    live: bool
    frames: int  # frames that reached the sinks
    decoded: int
    dropped: int  # live sources: frames dropped by the keep-latest queue
    reconnects: int
    fps: float
    latency_ms_p50: float | None  # end to end: decoder out -> sinks done
    latency_ms_p95: float | None
    events: int
    counts: dict[str, dict[str, int]]  # the latest counts per line / zone
    decoder: str
    decoder_note: str | None
    error: str | None


@dataclass(frozen=True)
class PipelineSummary(Record):
    """A pipeline run: frames, throughput, end-to-end latency, drops, counts and events."""

    name: str
    frames: int
    fps: float  # all streams together: frames / wall_s
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    dropped_frames: int
    events: int
    counts: dict[str, dict[str, dict[str, int]]]  # stream id -> line / zone -> counts
    wall_s: float
    batches: int
    mean_batch: float | None
    stage_ms_mean: dict[str, float]  # mean milliseconds per frame in each stage
    runtime: dict[str, Any]  # what ran: runtime, version, device, provider, precision
    streams: tuple[StreamSummary, ...]
    interrupted: bool = False


@dataclass(frozen=True)
class StreamSnapshot(Record):
    stream_id: str
    frames: int
    fps: float
    latency_ms_p50: float | None
    dropped: int
    reconnects: int
    events: int
    counts: dict[str, dict[str, int]]
    queue: int  # frames waiting in the source's queue
    ended: bool
    error: str | None


@dataclass(frozen=True)
class PipelineSnapshot(Record):
    """The pipeline while it runs (for a live view): per stream, and the queues between stages."""

    elapsed_s: float
    frames: int
    fps: float
    streams: tuple[StreamSnapshot, ...]
    queues: dict[str, int]  # stage queue -> items waiting
    queue_limits: dict[str, int]


@dataclass
class _Item:
    """A frame on its way through the stages."""

    decoded: Decoded
    tensor: np.ndarray | None = None
    info: Any = None
    stage_s: dict[str, float] = field(default_factory=dict)
    t_prep_done: float = 0.0
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    result: FrameResult | None = None


class _StreamState:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.frames = 0
        self.events = 0
        self.counts: dict[str, dict[str, int]] = {}
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.last_index = -1
        self.tracker: Any = None
        self.analytics: Any = None


class Pipeline:
    """A running pipeline for one :class:`PipelineSpec`.

    ``runtime``: a loaded runtime to use instead of loading ``spec.model``. ``sinks``: sink
    objects in addition to the spec's. ``max_frames``: stop each stream after that many frames.
    ``warmup``: one untimed inference on a batch of one before the sources start.
    """

    def __init__(self, spec: PipelineSpec, *, runtime: Runtime | None = None, sinks: Sequence[Sink] = (),
                 max_frames: int | None = None, warmup: bool = True) -> None:
        self.spec = spec
        self.warmup = warmup
        self.max_frames = max_frames
        self.detector = Detector(spec.model, runtime=spec.runtime, device=spec.device, threads=spec.threads,
                                 detect=spec.detect, loaded=runtime)
        self.sources = [Source(s, depth=spec.queue_depth, max_frames=max_frames) for s in spec.sources]
        self._streams = {src.id: _StreamState(src) for src in self.sources}
        self._extra_sinks = list(sinks)
        self._sinks: list[Sink] = []
        depth = spec.queue_depth
        self._queues = {
            "preprocess": FrameQueue(max(depth, spec.batch.max_batch), keep_latest=False),
            "infer": FrameQueue(2, keep_latest=False),  # whole batches
            "postprocess": FrameQueue(max(depth, spec.batch.max_batch), keep_latest=False),
            "track": FrameQueue(depth, keep_latest=False),
            "analytics": FrameQueue(depth, keep_latest=False),
            "sink": FrameQueue(depth, keep_latest=False),
        }
        self.batcher = Batcher(spec.batch.max_batch, spec.batch.max_wait_ms)
        self._abort = threading.Event()
        self._error: tuple[str, BaseException] | None = None
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._prep_open = len(self.sources)
        self._prep_lock = threading.Lock()
        self._stage_sum_s = dict.fromkeys(STAGES, 0.0)
        self._stage_frames = 0
        self._started_s: float | None = None
        self._ended_s: float | None = None
        self._interrupted = False
        self._opened = False
        self._closed = False

    # -- life cycle

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._threads:
            self._abort_if_stuck(timeout_s=30.0)
        self._close()

    def start(self) -> Pipeline:
        """Load the model, open the sinks, start every thread. Errors here raise at once."""
        if self._opened:
            return self
        self._opened = True
        try:
            self.detector.open()
            if self.warmup:
                self.detector.warmup()
            for stream_id, state in self._streams.items():
                state.analytics = self._make_analytics(stream_id)
            if self.spec.track.tracker != "none":  # imports the tracker library now, not in the first frame
                self._make_tracker(25.0)
            self._sinks = [*self._make_sinks(), *self._extra_sinks]
            for sink in self._sinks:
                attach = getattr(sink, "attach", None)
                if callable(attach):  # a sink that reads the pipeline itself (metrics: drops, queue depths)
                    attach(self)
                sink.open()
        except BaseException:
            self._close()
            raise
        self._started_s = time.perf_counter()
        for src in self.sources:
            src.start()
            self._spawn(f"preprocess-{src.id}", self._preprocess_loop, src)
        self._spawn("batch", self._batch_loop)
        self._spawn("infer", self._infer_loop)
        self._spawn("postprocess", self._postprocess_loop)
        self._spawn("track", self._track_loop)
        self._spawn("analytics", self._analytics_loop)
        self._spawn("sink", self._sink_loop)
        return self

    def stop(self) -> None:
        """End every source; what is in flight still goes through, then the threads finish."""
        for src in self.sources:
            src.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the pipeline to finish; True when it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
            if thread.is_alive():
                return False
        return True

    def run(self, *, on_update: Callable[[PipelineSnapshot], None] | None = None,
            update_every_s: float = 0.5) -> PipelineSummary:
        """Start, run until every stream ends (or Ctrl-C), close, and return the summary.

        ``on_update`` gets a :class:`PipelineSnapshot` every ``update_every_s`` seconds. The first
        Ctrl-C stops the sources and lets frames in flight finish; a second one abandons them.
        """
        self.start()
        try:
            while not self.wait(update_every_s):
                if on_update is not None:
                    on_update(self.snapshot())
        except KeyboardInterrupt:
            self._interrupted = True
            self.stop()
            try:
                self._abort_if_stuck(timeout_s=10.0)
            except KeyboardInterrupt:
                self._fail_quietly()
        finally:
            self._close()
        self._raise_error()
        if on_update is not None:
            on_update(self.snapshot())
        return self.summary()

    def _abort_if_stuck(self, timeout_s: float) -> None:
        if not self.wait(timeout_s):
            self._fail_quietly()
            self.wait(5.0)

    def _fail_quietly(self) -> None:
        self._abort.set()
        for q in self._queues.values():
            q.close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        errors = []
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:  # close every sink even if one fails
                errors.append(exc)
        self.detector.close()
        for src in self.sources:
            src.join(1.0)
        if errors and self._error is None:
            self._error = ("sink", errors[0])

    def _raise_error(self) -> None:
        if self._error is None:
            return
        stage, exc = self._error
        if isinstance(exc, UserError):
            raise UserError(f"pipeline stage {stage}: {exc}") from exc
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"pipeline stage {stage} failed: {type(exc).__name__}: {first}") from exc

    # -- building the stages after the model

    def _make_analytics(self, stream_id: str) -> Any:
        if self.spec.analytics.empty:
            return None
        try:
            from zhisuan.pipeline import analytics
        except ImportError as exc:
            raise UserError(f"analytics (lines, zones) need zhisuan.pipeline.analytics, which this build lacks ({exc})") from None
        return analytics.Analytics(analytics.AnalyticsSpec.from_dict(self.spec.analytics.to_dict()), stream_id)

    def _make_sinks(self) -> list[Sink]:
        if not self.spec.sinks:
            return []
        try:
            from zhisuan.pipeline.sinks import make_sink
        except ImportError as exc:
            raise UserError(f"sinks need zhisuan.pipeline.sinks, which this build lacks ({exc})") from None
        return [make_sink(s.to_dict()) for s in self.spec.sinks]

    def _make_tracker(self, frame_rate: float) -> Any:
        """A tracker for one stream of ``frame_rate`` (the decoder's, known once the stream opened)."""
        try:
            from zhisuan.pipeline.track import make_tracker
        except ImportError as exc:
            raise UserError(f"tracking needs zhisuan.pipeline.track, which this build lacks ({exc}); "
                            "or set track: {tracker: none}") from None
        return make_tracker(self.spec.track.tracker_spec(frame_rate))

    # -- the threads

    def _spawn(self, stage: str, loop: Callable[..., None], *args: Any) -> None:
        def body() -> None:
            try:
                loop(*args)
            except BaseException as exc:  # any failure stops the pipeline, reported once by run()
                self._record(stage.split("-", 1)[0], exc)

        thread = threading.Thread(target=body, name=f"zhisuan-{stage}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _record(self, stage: str, exc: BaseException) -> None:
        """The first failure wins; it stops every source and stage."""
        with self._error_lock:
            if self._error is None:
                self._error = (stage, exc)
        self.stop()
        self._fail_quietly()

    def _put(self, queue: str, item: Any) -> bool:
        return self._queues[queue].put(item, self._abort)

    def _get(self, queue: str) -> Any:
        while True:
            if self._abort.is_set():
                return END
            try:
                return self._queues[queue].get(_POLL_S)
            except TimeoutError:
                continue

    def _preprocess_loop(self, src: Source) -> None:
        try:
            while not self._abort.is_set():
                try:
                    decoded = src.get(_POLL_S)
                except TimeoutError:
                    continue
                if decoded is None:
                    break
                started = time.perf_counter()
                tensor, info = self.detector.preprocess(decoded.frame.image)
                done = time.perf_counter()
                item = _Item(decoded, tensor, info, {"decode": decoded.decode_s, "preprocess": done - started},
                             t_prep_done=done)
                if not self._put("preprocess", item):
                    break
            if src.error is not None and src.decoded == 0 and not src.live:
                self._record("decode", UserError(f"source {src.id!r} ({src.spec.url}): {src.error}"))
        finally:
            with self._prep_lock:
                self._prep_open -= 1
                if self._prep_open == 0:
                    self._queues["preprocess"].close()

    def _batch_loop(self) -> None:
        q = self._queues["preprocess"]
        try:
            while (batch := self.batcher.collect(q.get, self._abort)) is not None:
                now = time.perf_counter()
                for item in batch:
                    item.stage_s["batch"] = now - item.t_prep_done
                if not self._put("infer", batch):
                    return
        finally:
            self._queues["infer"].close()

    def _infer_loop(self) -> None:
        try:
            while (batch := self._get("infer")) is not END:
                started = time.perf_counter()
                boxes, scores = self.detector.infer(np.stack([item.tensor for item in batch]))
                took = time.perf_counter() - started
                for i, item in enumerate(batch):
                    item.tensor = None  # the input is no longer needed; free it now
                    item.boxes, item.scores = boxes[i], scores[i]
                    item.stage_s["infer"] = took
                    if not self._put("postprocess", item):
                        return
        finally:
            self._queues["postprocess"].close()

    def _postprocess_loop(self) -> None:
        try:
            while (item := self._get("postprocess")) is not END:
                started = time.perf_counter()
                frame = item.decoded.frame
                detections = self.detector.postprocess(item.boxes, item.scores, item.info, frame.size_wh)
                item.boxes = item.scores = None
                item.stage_s["postprocess"] = time.perf_counter() - started
                item.result = FrameResult(frame, detections, stage_s=item.stage_s)
                if not self._put("track", item):
                    return
        finally:
            self._queues["track"].close()

    def _track_loop(self) -> None:
        try:
            while (item := self._get("track")) is not END:
                started = time.perf_counter()
                result = item.result
                state = self._streams[result.stream_id]
                if self.spec.track.tracker != "none":
                    if state.tracker is None:
                        src = state.source
                        state.tracker = self._make_tracker(src.frame_rate or src.spec.fps)
                    result.detections = state.tracker.update(result.detections, result.frame)
                result.stage_s["track"] = time.perf_counter() - started
                if not self._put("analytics", item):
                    return
        finally:
            self._queues["analytics"].close()

    def _analytics_loop(self) -> None:
        try:
            while (item := self._get("analytics")) is not END:
                started = time.perf_counter()
                result = item.result
                analytics = self._streams[result.stream_id].analytics
                if analytics is not None:
                    analytics.update(result)
                result.stage_s["analytics"] = time.perf_counter() - started
                if not self._put("sink", item):
                    return
        finally:
            self._queues["sink"].close()

    def _sink_loop(self) -> None:
        while (item := self._get("sink")) is not END:
            started = time.perf_counter()
            result = item.result
            state = self._streams[result.stream_id]
            if result.frame.index <= state.last_index:  # the stages are FIFO; this would be a bug
                raise RuntimeError(f"stream {result.stream_id}: frame {result.frame.index} after {state.last_index}")
            state.last_index = result.frame.index
            for sink in self._sinks:
                sink.write(result)
            done = time.perf_counter()
            result.stage_s["sink"] = done - started
            state.frames += 1
            state.events += len(result.events)
            if result.counts:
                state.counts = {k: dict(v) for k, v in result.counts.items()}
            state.latencies_s.append(done - result.frame.decoded_at_s)
            for stage in STAGES:
                self._stage_sum_s[stage] += result.stage_s.get(stage, 0.0)
            self._stage_frames += 1
            self._ended_s = done

    # -- what it did

    def queue_sizes(self) -> dict[str, int]:
        """Items waiting in each queue now: each source's (``source:<id>``) and each stage's."""
        sizes = {f"source:{src.id}": src.queue_size for src in self.sources}
        sizes.update({name: len(q) for name, q in self._queues.items()})
        return sizes

    def queue_limits(self) -> dict[str, int]:
        limits = {f"source:{src.id}": src.queue_maxsize for src in self.sources}
        limits.update({name: q.maxsize for name, q in self._queues.items()})
        return limits

    def queue_high_water(self) -> dict[str, int]:
        """The most items each queue ever held at once."""
        marks = {f"source:{src.id}": src.stats().queue_high_water for src in self.sources}
        marks.update({name: q.high_water for name, q in self._queues.items()})
        return marks

    def _elapsed_s(self) -> float:
        if self._started_s is None:
            return 0.0
        end = self._ended_s if self._closed and self._ended_s is not None else time.perf_counter()
        return max(end - self._started_s, 1e-9)

    def snapshot(self) -> PipelineSnapshot:
        elapsed = self._elapsed_s()
        streams = []
        for state in self._streams.values():
            src = state.source
            recent = list(state.latencies_s)[-200:]
            streams.append(StreamSnapshot(
                src.id, state.frames, state.frames / elapsed, _pct_ms(recent, 50), src.dropped, src.reconnects,
                state.events, {k: dict(v) for k, v in state.counts.items()}, src.queue_size, src.stats().ended,
                src.error))
        frames = sum(s.frames for s in streams)
        return PipelineSnapshot(elapsed, frames, frames / elapsed, tuple(streams), self.queue_sizes(),
                                self.queue_limits())

    def summary(self) -> PipelineSummary:
        wall = self._elapsed_s()
        streams = []
        every: list[float] = []
        for state in self._streams.values():
            st: SourceStats = state.source.stats()
            lat = list(state.latencies_s)
            every += lat
            streams.append(StreamSummary(
                st.stream_id, st.url, st.live, state.frames, st.decoded, st.dropped, st.reconnects,
                state.frames / wall, _pct_ms(lat, 50), _pct_ms(lat, 95), state.events,
                {k: dict(v) for k, v in state.counts.items()}, st.decoder, st.decoder_note, st.error))
        frames = sum(s.frames for s in streams)
        n = max(self._stage_frames, 1)
        info = self.detector.info
        runtime = {} if info is None else {
            "runtime": info.runtime, "version": info.version, "device": info.device, "provider": info.provider,
            "precision": info.precision, "intra_op_threads": info.intra_op_threads}
        return PipelineSummary(
            name=self.spec.name, frames=frames, fps=frames / wall, latency_ms_p50=_pct_ms(every, 50),
            latency_ms_p95=_pct_ms(every, 95), dropped_frames=sum(s.dropped for s in streams),
            events=sum(s.events for s in streams), counts={s.stream_id: s.counts for s in streams}, wall_s=wall,
            batches=self.batcher.batches, mean_batch=self.batcher.mean_batch,
            stage_ms_mean={k: 1000.0 * v / n for k, v in self._stage_sum_s.items()}, runtime=runtime,
            streams=tuple(streams), interrupted=self._interrupted)


def _pct_ms(values_s: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values_s), q) * 1000.0) if len(values_s) else None


def run_pipeline(spec: PipelineSpec, **kwargs: Any) -> PipelineSummary:
    """Run ``spec`` to the end and return its summary (``kwargs`` as for :class:`Pipeline`)."""
    with Pipeline(spec, **kwargs) as pipe:
        return pipe.run()
