"""Pipeline files: defaults, YAML = JSON = Python, and every bad key named by its path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from zhisuan.errors import UserError
from zhisuan.pipeline.spec import (
    AnalyticsSpec,
    BatchSpec,
    LineSpec,
    PipelineSpec,
    SinkSpec,
    SourceSpec,
    SpecError,
    TrackSpec,
    ZoneSpec,
    load_spec,
    source_kind,
)

FULL = {
    "name": "crossing",
    "model": "tiny.onnx",
    "runtime": "null",
    "device": "cpu",
    "threads": 2,
    "batch": {"max_batch": 4, "max_wait_ms": 5},
    "queue_depth": 3,
    "sources": [
        {"id": "cam1", "url": "rtsp://127.0.0.1:8554/live", "reconnect_attempts": 3},
        {"url": "bikes.mp4", "loop": True},
    ],
    "detect": {"score_threshold": 0.3, "iou": 0.5, "classes": ["car", "person"]},
    "track": {"tracker": "none"},
    "analytics": {"lines": [{"name": "road", "start": [0, 200], "end": [640, 200]}],
                  "zones": [{"name": "kerb", "polygon": [[0, 0], [100, 0], [100, 100]]}]},
    "sinks": [{"kind": "jsonl", "path": "events.jsonl"}, {"kind": "mqtt", "host": "localhost", "port": 1883,
                                                         "topic": "zhisuan/events"}],
}

YAML = """\
name: crossing
model: tiny.onnx
runtime: "null"
device: cpu
threads: 2
batch: {max_batch: 4, max_wait_ms: 5}
queue_depth: 3
sources:
  - {id: cam1, url: "rtsp://127.0.0.1:8554/live", reconnect_attempts: 3}
  - url: bikes.mp4
    loop: true
detect: {score_threshold: 0.3, iou: 0.5, classes: [car, person]}
track: {tracker: none}
analytics:
  lines: [{name: road, start: [0, 200], end: [640, 200]}]
  zones: [{name: kerb, polygon: [[0, 0], [100, 0], [100, 100]]}]
sinks:
  - {kind: jsonl, path: events.jsonl}
  - {kind: mqtt, host: localhost, port: 1883, topic: zhisuan/events}
"""


def test_defaults_from_the_smallest_spec() -> None:
    spec = PipelineSpec.from_dict({"sources": [{"url": "video/bikes.mp4"}]})
    assert (spec.model, spec.runtime, spec.device, spec.threads, spec.queue_depth) == (
        "yolov3-tiny", "onnxruntime", "cpu", None, 8)
    assert spec.batch == BatchSpec(8, 20.0)
    assert (spec.detect.score_threshold, spec.detect.iou, spec.detect.classes) == (0.25, 0.45, None)
    assert spec.track.tracker == "bytetrack" and spec.analytics.empty and spec.sinks == ()
    src = spec.sources[0]
    assert (src.id, src.is_live, src.loop, src.reconnect, src.reconnect_attempts) == ("bikes", False, False, True, None)


def test_yaml_json_and_python_give_the_same_spec(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(YAML)
    (tmp_path / "p.json").write_text(json.dumps(FULL))
    from_yaml, from_json = load_spec(tmp_path / "p.yaml"), load_spec(tmp_path / "p.json")
    built = PipelineSpec(
        name="crossing", model="tiny.onnx", runtime="null", threads=2, batch=BatchSpec(4, 5), queue_depth=3,
        sources=(SourceSpec(id="cam1", url="rtsp://127.0.0.1:8554/live", reconnect_attempts=3),
                 SourceSpec(url="bikes.mp4", loop=True)),
        detect=PipelineSpec.from_dict(FULL).detect, track=TrackSpec("none"),
        analytics=AnalyticsSpec(lines=(LineSpec("road", (0, 200), (640, 200)),),
                                zones=(ZoneSpec("kerb", ((0, 0), (100, 0), (100, 100))),)),
        sinks=(SinkSpec("jsonl", {"path": "events.jsonl"}),
               SinkSpec("mqtt", {"host": "localhost", "port": 1883, "topic": "zhisuan/events"})))
    assert from_yaml == from_json == built
    assert PipelineSpec.from_dict(built.to_dict()) == built  # to_dict round-trips
    assert built.sources[0].is_live and not built.sources[1].is_live
    assert built.sinks[1].to_dict() == {"kind": "mqtt", "host": "localhost", "port": 1883, "topic": "zhisuan/events"}


def _with(path: str, value: Any) -> dict[str, Any]:
    """FULL with the value at a dotted path (``sources[1].url``) replaced; ``...`` deletes it."""
    data = json.loads(json.dumps(FULL))
    *parents, last = path.replace("]", "").replace("[", ".").split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return data


@pytest.mark.parametrize(("path", "value", "named"), [
    ("sources[1].url", "", "sources[1].url: must be a non-empty string"),
    ("sources[1].url", 5, "sources[1].url: must be a non-empty string"),
    ("sources[1].url", "ftp://host/x.mp4", "sources[1].url: 'ftp://host/x.mp4': unknown scheme 'ftp'"),
    ("sources[1].lop", True, "sources[1]: unknown key 'lop'"),
    ("sources[1].loop", "yes", "sources[1].loop: must be true or false"),
    ("sources[0].reconnect_attempts", 0, "sources[0].reconnect_attempts: must be an integer in 1..1000000 or null"),
    ("sources[0].timeout_s", -1, "sources[0].timeout_s: must be a number above 0"),
    ("sources[0].hwaccel", "gpu", "sources[0].hwaccel: \"gpu\" is not one of: auto, none, cuda"),
    ("sources[0].id", "bikes", "sources[1].id: stream id 'bikes' is used twice"),
    ("sources[0].id", "a b", "sources[0].id: 'a b' must be 1-64 letters"),
    ("sources", [], "sources: is empty"),
    ("sources", "bikes.mp4", "sources: must be a list of sources"),
    ("sources", ..., "sources: is missing"),
    ("batch.max_batch", 0, "batch.max_batch: must be an integer in 1..1024, got 0"),
    ("batch.max_batch", True, "batch.max_batch: must be an integer in 1..1024, got true"),
    ("batch.max_wait_ms", float("nan"), "batch.max_wait_ms: must be a number"),
    ("batch.size", 4, "batch: unknown key 'size'"),
    ("batch", 4, "batch: must be a mapping of keys (max_batch, max_wait_ms), got 4"),
    ("queue_depth", 0, "queue_depth: must be an integer in 1..4096"),
    ("threads", 0, "threads: must be an integer in 1..1024 or null"),
    ("runtime", "tensorflow", "runtime: \"tensorflow\" is not one of: onnxruntime"),
    ("model", "", "model: must be a non-empty string"),
    ("modle", "x", "unknown key 'modle'; the keys are: name, model"),
    ("detect.score_threshold", 1.5, "detect.score_threshold: must be a number at least 0 and at most 1"),
    ("detect.classes", [], "detect.classes: must be a non-empty list"),
    ("detect.classes", ["car", 3], "detect.classes[1]: must be a non-empty string, got 3"),
    ("track.tracker", "deepsort", "track.tracker: \"deepsort\" is not one of: bytetrack, sort, none"),
    ("track", "sort", "track: must be a mapping with key 'tracker'"),
    ("analytics.lines[0].start", [0], "analytics.lines[0].start: must be a point [x, y]"),
    ("analytics.lines[0].end", [0, 200], "analytics.lines[0].end: must differ from start"),
    ("analytics.lines[0].anchor", "feet", "analytics.lines[0].anchor: \"feet\" is not one of: bottom_center"),
    ("analytics.zones[0].polygon", [[0, 0], [1, 1]], "analytics.zones[0].polygon: must be a list of 3 or more"),
    ("analytics.zones[0].polygon", [[0, 0], [1, 1], [2, "x"]], "analytics.zones[0].polygon[2]: must be a point"),
    ("analytics.zones[0].name", "road", "analytics.zones[0].name: 'road' is also a line's name"),
    ("analytics.lost_after_s", -1, "analytics.lost_after_s: must be a number at least 0"),
    ("analytics.counting", [], "analytics: unknown key 'counting'"),
    ("sinks[1].port", 0, "sinks[1].port: must be an integer in 1..65535"),
    ("sinks[1].kind", "kafka", "sinks[1].kind: \"kafka\" is not one of: jsonl, video, mqtt, webhook, metrics"),
    ("sinks[1].host", ..., "sinks[1]: a mqtt sink needs 'host'"),
    ("sinks[0].file", "x", "sinks[0]: unknown key 'file' for a jsonl sink"),
    ("sinks[0].kind", ..., "sinks[0]: has no 'kind'"),
    ("sinks", {"kind": "jsonl"}, "sinks: must be a list of sinks"),
])
def test_a_bad_value_names_its_key_path(path: str, value: Any, named: str) -> None:
    with pytest.raises(SpecError) as err:
        PipelineSpec.from_dict(_with(path, value))
    assert str(err.value).startswith(named), str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_webhook_and_metrics_sinks() -> None:
    assert SinkSpec.from_dict({"kind": "metrics"}).options == {}
    assert SinkSpec.from_dict({"kind": "metrics", "port": None}).options == {"port": None}
    with pytest.raises(SpecError, match=r"^url: 'ftp://x' must be an http:// or https:// URL"):
        SinkSpec.from_dict({"kind": "webhook", "url": "ftp://x"})
    with pytest.raises(SpecError, match=r"^sinks: has two metrics sinks"):
        PipelineSpec.from_dict({"sources": [{"url": "a.mp4"}], "sinks": [{"kind": "metrics"}, {"kind": "metrics"}]})


def test_python_built_specs_are_checked_too() -> None:
    with pytest.raises(SpecError, match=r"^max_batch: must be an integer"):
        BatchSpec(max_batch=0)
    with pytest.raises(SpecError, match=r"^sources\[0\]: must be a SourceSpec, got str"):
        PipelineSpec(sources=("bikes.mp4",))  # type: ignore[arg-type]


def test_source_kinds_and_live_default(tmp_path: Path) -> None:
    assert source_kind("rtsp://h/x") == source_kind("http://h/x.mjpg") == source_kind("tcp://h:9") == "network"
    assert source_kind("/dev/video0") == source_kind("camera:2") == "camera"
    assert source_kind(str(tmp_path)) == "folder" and source_kind("clip.mp4") == "file"
    assert SourceSpec(url="udp://0.0.0.0:5000").is_live and SourceSpec(url="/dev/video1").is_live
    assert not SourceSpec(url="rtsp://h/x", live=False).is_live and SourceSpec(url="a.mp4", live=True).is_live


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pipeline file not found"):
        load_spec(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("sources:\n  - url: a.mp4\n   loop: true\n")
    with pytest.raises(UserError, match=r"bad.yaml is not valid YAML at line 3"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text("{\"sources\": [}")
    with pytest.raises(UserError, match=r"bad.json is not valid JSON"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- url: a.mp4\n")
    with pytest.raises(SpecError, match=r"^must be a mapping of keys \(name, model"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "null.yaml").write_text("sources: [{url: a.mp4}]\nruntime: null\n")
    with pytest.raises(SpecError, match=r'^runtime: is empty; YAML reads a bare null as nothing: write runtime: "null"'):
        load_spec(tmp_path / "null.yaml")
    (tmp_path / "key.yaml").write_text("sources: [{url: a.mp4}]\nbatch: {max_batch: -2}\n")
    with pytest.raises(SpecError, match=r"^batch.max_batch: must be an integer in 1..1024, got -2 \(in .*key.yaml\)$"):
        load_spec(tmp_path / "key.yaml")


@pytest.mark.skipif(importlib.util.find_spec("zhisuan.pipeline.track") is None,
                    reason="zhisuan.pipeline.track (hv-ana's tracker module) is not in this build yet")
def test_tracker_settings_are_checked_by_the_track_module() -> None:
    spec = PipelineSpec.from_dict({"sources": [{"url": "a.mp4"}], "track": {"tracker": "sort", "lost_track_s": 2}})
    assert spec.track.tracker_spec(30.0).lost_track_s == 2
    with pytest.raises(SpecError, match=r"^track: unknown key 'kalman'"):
        PipelineSpec.from_dict({"sources": [{"url": "a.mp4"}], "track": {"kalman": 1}})
    with pytest.raises(SpecError, match=r"^track\.lost_track_s"):
        PipelineSpec.from_dict({"sources": [{"url": "a.mp4"}], "track": {"lost_track_s": -1}})
