"""The video analytics application: streams in; detections, tracks, counts, events and an
annotated video out (APP-1).

:func:`run_video_app` builds a :class:`~zhisuan.pipeline.spec.PipelineSpec` from what the user
gave (sources, a pipeline file, a model, a runtime, an output directory), runs it and returns the
summary. With ``out``, the directory gets ``events.jsonl`` (a JSON Lines sink), ``annotated.mp4``
(a video sink; one per stream, ``annotated-<id>.mp4``, for several streams) and ``summary.json``,
unless the pipeline file already declares a sink of that kind.

>>> result = run_video_app(VideoAppConfig(sources=("bikes.mp4",), out=Path("out")))  # doctest: +SKIP
>>> result.summary.fps, sorted(result.files)                                      # doctest: +SKIP
(41.7, ['events', 'summary', 'video'])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan._io import atomic_write_json
from zhisuan.errors import UsageError, UserError
from zhisuan.pipeline.engine import Pipeline, PipelineSnapshot, PipelineSummary
from zhisuan.pipeline.spec import PipelineSpec, SpecError, load_spec
from zhisuan.results import Record

__all__ = ["EVENTS_FILE", "SUMMARY_FILE", "VIDEO_FILE", "VideoAppConfig", "VideoAppResult", "build_spec",
           "run_video_app"]

EVENTS_FILE = "events.jsonl"
VIDEO_FILE = "annotated.mp4"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class VideoAppConfig:
    """What the user asked for. ``None`` fields come from the pipeline file, else the defaults.

    ``sources`` replace the pipeline file's sources when given. ``max_frames``: stop each stream
    after that many frames (live streams run until stopped otherwise).
    """

    sources: tuple[str, ...] = ()
    pipeline: Path | None = None
    model: str | None = None
    runtime: str | None = None
    device: str | None = None
    threads: int | None = None
    out: Path | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        from zhisuan.runtime import backend_names

        if self.runtime is not None and self.runtime not in backend_names():
            raise UsageError(f"unknown runtime {self.runtime!r}; choose one of: {', '.join(backend_names())}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise UsageError(f"threads must be in 1..1024, got {self.threads}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"max_frames must be at least 1, got {self.max_frames}")
        object.__setattr__(self, "sources", tuple(self.sources))


@dataclass(frozen=True)
class VideoAppResult(Record):
    """The run's summary, the pipeline that ran (as a pipeline file would say it) and the files written."""

    summary: PipelineSummary
    pipeline: dict[str, Any]
    out_dir: Path | None
    files: dict[str, Path] = field(default_factory=dict)  # events, video, summary -> path


def build_spec(config: VideoAppConfig) -> PipelineSpec:
    """The pipeline the app runs: the file (if any), with the command line's values on top."""
    overrides: dict[str, Any] = {}
    if config.sources:
        overrides["sources"] = _sources(config.sources)
    for key in ("model", "runtime", "device", "threads"):
        if getattr(config, key) is not None:
            overrides[key] = getattr(config, key)
    if config.pipeline is not None:
        spec = load_spec(config.pipeline, overrides=overrides)
    else:
        if not config.sources:
            raise UsageError("no source: name a video file, image folder, camera or stream URL, or a --pipeline file")
        overrides.setdefault("name", "video")
        spec = PipelineSpec.from_dict(overrides)
    if config.out is not None:
        spec = _with_out_sinks(spec, config.out)
    return spec


def _sources(urls: tuple[str, ...]) -> list[dict[str, str]]:
    """One source per URL; ids from the file names, made unique (bikes, bikes-2, ...)."""
    from zhisuan.pipeline.spec import SourceSpec

    taken: set[str] = set()
    out = []
    for i, url in enumerate(urls):
        try:
            base = SourceSpec(url=url).id or "stream"
        except SpecError as exc:
            raise UserError(f"source {i + 1} ({url!r}): {exc.message}") from None
        sid, n = base, 1
        while sid in taken:
            n += 1
            sid = f"{base}-{n}"
        taken.add(sid)
        out.append({"id": sid, "url": url})
    return out


def _with_out_sinks(spec: PipelineSpec, out: Path) -> PipelineSpec:
    import dataclasses

    from zhisuan.pipeline.spec import SinkSpec

    kinds = {s.kind for s in spec.sinks}
    added = []
    if "jsonl" not in kinds:
        added.append(SinkSpec("jsonl", {"path": str(out / EVENTS_FILE)}))
    if "video" not in kinds:
        if len(spec.sources) == 1:
            added.append(SinkSpec("video", {"path": str(out / VIDEO_FILE)}))
        else:
            stem, suffix = VIDEO_FILE.rsplit(".", 1)
            added += [SinkSpec("video", {"path": str(out / f"{stem}-{s.id}.{suffix}")}) for s in spec.sources]
    return dataclasses.replace(spec, sinks=(*spec.sinks, *added))


def run_video_app(config: VideoAppConfig, *, on_update: Callable[[PipelineSnapshot], None] | None = None,
                  runtime: Any = None) -> VideoAppResult:
    """Build the pipeline, run it to the end of its streams (or ``max_frames``, or Ctrl-C), write
    ``summary.json`` into ``out`` and return the result. ``on_update`` gets a live snapshot twice
    a second. ``runtime``: an already loaded runtime instead of the spec's model (tests, serving)."""
    spec = build_spec(config)
    if config.out is not None:
        if config.out.exists() and not config.out.is_dir():
            raise UserError(f"--out {config.out} exists and is not a directory")
        config.out.mkdir(parents=True, exist_ok=True)
    with Pipeline(spec, runtime=runtime, max_frames=config.max_frames) as pipe:
        summary = pipe.run(on_update=on_update)
    files: dict[str, Path] = {}
    if config.out is not None:
        for sink in spec.sinks:
            path = sink.options.get("path")
            if sink.kind == "jsonl" and path:
                files["events"] = Path(path)
            elif sink.kind == "video" and path:
                files.setdefault("video", Path(path))
        files["summary"] = config.out / SUMMARY_FILE
    result = VideoAppResult(summary, spec.to_dict(), config.out, files)
    if config.out is not None:
        atomic_write_json(files["summary"], _summary_json(result))
    return result


def _summary_json(result: VideoAppResult) -> dict[str, Any]:
    data = result.to_dict()
    data.pop("files", None)
    data["files"] = {k: str(v) for k, v in result.files.items()}
    return data
