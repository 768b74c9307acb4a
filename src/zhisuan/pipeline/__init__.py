"""Pipelines: graphs of stages around packaged models, declared as data (APP-1, APP-2).

See docs/video.md. The engine, sources, stages and sinks live in the modules of this package;
:mod:`zhisuan.pipeline.frames` holds the types that flow between them.
"""

from zhisuan.pipeline.frames import Event, Frame, FrameResult, Sink

__all__ = ["Event", "Frame", "FrameResult", "Sink"]
