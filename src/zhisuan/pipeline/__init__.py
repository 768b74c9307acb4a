"""Pipelines: graphs of stages around packaged models, declared as data (APP-1, APP-2).

See docs/video.md. :mod:`~zhisuan.pipeline.spec` declares a pipeline (YAML, JSON or Python),
:mod:`~zhisuan.pipeline.sources` decodes streams, :mod:`~zhisuan.pipeline.batcher` and
:mod:`~zhisuan.pipeline.detector` batch and run the model, :mod:`~zhisuan.pipeline.engine` runs the
stages as threads; :mod:`zhisuan.pipeline.frames` holds the types that flow between them.
"""

from zhisuan.pipeline.engine import Pipeline, PipelineSnapshot, PipelineSummary, StreamSummary, run_pipeline
from zhisuan.pipeline.frames import Event, Frame, FrameResult, Sink
from zhisuan.pipeline.spec import PipelineSpec, SourceSpec, SpecError, load_spec

__all__ = [
    "Event",
    "Frame",
    "FrameResult",
    "Pipeline",
    "PipelineSnapshot",
    "PipelineSpec",
    "PipelineSummary",
    "Sink",
    "SourceSpec",
    "SpecError",
    "StreamSummary",
    "load_spec",
    "run_pipeline",
]
