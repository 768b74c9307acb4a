"""Calibration inputs: ``.npz`` data, seeded random feeds, or a zoo model's realistic ``calib`` split.

The inputs come from :func:`zhisuan.inputs.input_source`. Random calibration is a poor proxy for
real data (activation ranges of noise are not those of images or text), so it is flagged in the
result. A zoo model's ``calib`` split is made like its evaluation set but from another seed (or,
for EfficientNet, from other photographs), so calibration never sees the evaluation data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.inputs import CALIB_SEED, METRIC_SEED, input_source
from zhisuan.results import Record

__all__ = [
    "CALIB_SEED", "METRIC_SEED", "RANDOM_WARNING", "Calibration", "CalibrationInfo", "check_not_empty",
    "load_calibration",
]

Feeds = list[dict[str, np.ndarray]]

RANDOM_WARNING = (
    "calibrated on random inputs: a poor proxy for real data, ranges (and so accuracy) may be far "
    "off; give --data DATA (.npz keyed by input names) or use a zoo model for realistic inputs"
)


@dataclass(frozen=True)
class CalibrationInfo(Record):
    """Where the calibration feeds came from (``npz:PATH``, ``zoo:NAME`` or ``random``) and how many."""

    source: str
    batches: int
    samples: int
    warning: str | None


@dataclass(frozen=True)
class Calibration:
    """Calibration feeds and where they came from (``npz``, ``zoo:NAME`` or ``random``)."""

    feeds: Feeds
    source: str
    warning: str | None = None

    @property
    def samples(self) -> int:
        return sum(_batch(f) for f in self.feeds)

    @property
    def info(self) -> CalibrationInfo:
        return CalibrationInfo(self.source, len(self.feeds), self.samples, self.warning)


def _batch(feed: dict[str, np.ndarray]) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def load_calibration(
    model: Any, *, data: str | Path | None = None, random: int | None = None, zoo_name: str | None = None,
    seed: int = CALIB_SEED, batches: int = 8,
) -> Calibration:
    """Feeds from ``data``, else a zoo model's realistic ``calib`` split, else ``random`` seeded batches."""
    made = input_source(zoo_name, data=data, random=random, split="calib", count=batches, seed=seed).make(model)
    return Calibration(made.feeds, made.label, None if made.realistic else RANDOM_WARNING)


def check_not_empty(feeds: Feeds, what: str) -> None:
    if not feeds:
        raise UserError(f"no {what} inputs")
