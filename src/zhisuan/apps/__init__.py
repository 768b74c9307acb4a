"""Applications built on pipelines of deployed models (APP-1 video analytics; APP-2 to come).

Each application is one function taking a frozen config and returning a frozen result, so the
CLI (``zhisuan app ...``) and Python callers share it.
"""

from zhisuan.apps.video import VideoAppConfig, VideoAppResult, run_video_app

__all__ = ["VideoAppConfig", "VideoAppResult", "run_video_app"]
