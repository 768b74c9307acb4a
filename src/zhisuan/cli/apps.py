"""``zhisuan app``: applications on deployed models. ``zhisuan app video``: video stream analytics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zhisuan.cli._common import COUNT, JSON_HELP, THREADS, console, err_console, output_path, print_json

if TYPE_CHECKING:
    from zhisuan.apps.video import VideoAppResult
    from zhisuan.pipeline.engine import PipelineSnapshot

app_group = typer.Typer(
    name="app", help="Applications on deployed models.\n\nExample:  zhisuan app video bikes.mp4 --out out/",
    no_args_is_help=True, rich_markup_mode="rich")


def video_cmd(
    sources: list[str] | None = typer.Argument(
        None, help="Video files, image folders, cameras (/dev/video0) or stream URLs (rtsp://, http://, tcp://)."),
    pipeline: Path | None = typer.Option(None, "--pipeline", "-p", help="Pipeline file (YAML or JSON); see docs/video.md."),
    model: str | None = typer.Option(None, "--model", "-m", help="Zoo name, .onnx file or package directory (default: yolov3-tiny)."),
    runtime: str | None = typer.Option(None, "--runtime", "-r", help="Runtime backend (default: onnxruntime)."),
    device: str | None = typer.Option(None, "--device", help="Device of the runtime: cpu, cuda, cuda:1, ..."),
    threads: int | None = typer.Option(None, "--threads", **THREADS, help="Intra-op threads (default: the runtime's)."),
    out: Path | None = typer.Option(None, "--out", "-o", callback=output_path,
                                    help="Directory for events.jsonl, annotated.mp4 and summary.json."),
    max_frames: int | None = typer.Option(None, "--max-frames", **COUNT, help="Stop each stream after N frames."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Detect, track and count objects in video streams; a live view shows each stream while it runs.

    Sources on the command line replace the pipeline file's.

    Ctrl-C stops the streams, lets the frames in flight finish and prints the summary (exit 130).

    Example:  zhisuan app video bikes.mp4 --out out/
    """
    from zhisuan.apps.video import VideoAppConfig, run_video_app

    config = VideoAppConfig(sources=tuple(sources or ()), pipeline=pipeline, model=model, runtime=runtime,
                            device=device, threads=threads, out=out, max_frames=max_frames)
    live = _LiveView(enabled=not json_out and err_console.is_terminal)
    with live:
        result = run_video_app(config, on_update=live.update)
    if json_out:
        print_json(result)
    else:
        console.print(_table(result.summary.streams, title=_title(result)))
        for kind, path in result.files.items():
            console.print(f"{kind}: {path}")
    if result.summary.interrupted:
        raise typer.Exit(130)


def _title(result: VideoAppResult) -> str:
    from rich.markup import escape

    s = result.summary
    p50 = "—" if s.latency_ms_p50 is None else f"{s.latency_ms_p50:.0f}"
    p95 = "—" if s.latency_ms_p95 is None else f"{s.latency_ms_p95:.0f}"
    rt = s.runtime.get("runtime", "?")
    return (f"{escape(s.name)}: {s.frames} frames in {s.wall_s:.1f} s, {s.fps:.1f} fps on {escape(str(rt))}, "
            f"latency p50 {p50} ms / p95 {p95} ms, {s.events} events, mean batch {s.mean_batch or 0:.1f}")


def _counts(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{name} " + " ".join(f"{k} {v}" for k, v in c.items()) for name, c in counts.items()) or "—"


def _table(streams: Any, *, title: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    notes = any(s.error for s in streams)
    for col in ("stream", "frames", "fps", "p50 ms", "dropped", "reconn.", "events", "counts", *(("error",) * notes)):
        table.add_column(col)
    for s in streams:
        latency = s.latency_ms_p50
        table.add_row(escape(s.stream_id), str(s.frames), f"{s.fps:.1f}", "—" if latency is None else f"{latency:.0f}",
                      str(s.dropped), str(s.reconnects), str(s.events), escape(_counts(s.counts)),
                      *((escape(s.error or ""),) * notes))
    return table


class _LiveView:
    """A rich Live table on stderr, refreshed from the pipeline's snapshots (off when not a terminal)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._live: Any = None

    def __enter__(self) -> _LiveView:
        if self.enabled:
            from rich.live import Live

            self._live = Live(console=err_console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, snapshot: PipelineSnapshot) -> None:
        if self._live is not None:
            title = f"{snapshot.frames} frames, {snapshot.fps:.1f} fps, {snapshot.elapsed_s:.0f} s (Ctrl-C stops)"
            self._live.update(_table(snapshot.streams, title=title))


def register(app: typer.Typer) -> None:
    app_group.command("video")(video_cmd)
    app.add_typer(app_group, name="app")
