"""Resolve what a user names on the command line: an ONNX file or a zoo model; and its sample inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import UserError


def resolve_model(source: str | Path) -> Path:
    """An existing ONNX file, or the verified cached ONNX file of a zoo model name."""
    path = Path(source)
    if path.is_file():
        return path
    from zhisuan import zoo

    if str(source) in zoo.names():
        return zoo.export(str(source)).path
    if path.suffix:
        raise UserError(f"model file not found: {path}")
    raise UserError(f"{source!r} is neither a file nor a zoo model ({', '.join(zoo.names())})")


def sample_inputs(
    model: str | Path | Any,
    *,
    data: str | Path | None = None,
    random: int | None = None,
    seed: int = 0,
    batch: int = 1,
    dim_values: dict[str, int] | None = None,
    zoo_name: str | None = None,
) -> list[dict[str, np.ndarray]]:
    """Inputs for ``model``: the ``.npz`` file(s) at ``data``, or ``random`` seeded random batches.

    ``data`` and ``random`` are exclusive; with neither, a zoo model (``zoo_name``) gets one batch
    of realistic inputs made like its evaluation set (random values are not valid inputs for
    every model: Silero VAD's ``sr`` must be a sample rate), anything else one random batch.
    Arrays from files are checked against the model's signature (names, dtypes, ranks).
    """
    from zhisuan.runtime.feeds import load_feeds, random_feeds
    from zhisuan.runtime.onnx_signature import onnx_signature

    if data is not None and random is not None:
        raise UserError("give either --data or --random, not both")
    if random is not None and random < 1:
        raise UserError(f"--random must be >= 1, got {random}")
    if isinstance(model, str | Path):
        inputs, _ = onnx_signature(model)
    else:
        from zhisuan.runtime.feeds import onnx_specs

        outputs = {v.name for v in model.graph.output}
        inputs = [s for n, s in onnx_specs(model).items() if n not in outputs]
    if data is not None:
        feeds = load_feeds(data, specs=inputs)
        if not feeds:
            raise UserError(f"no .npz inputs found in {data}")
        return feeds
    if random is None and zoo_name is not None:
        from zhisuan.quantize.calibration import METRIC_SEED, zoo_feeds

        realistic = zoo_feeds(zoo_name, batches=1, seed=METRIC_SEED)
        if realistic:
            return realistic[:1]
    return [random_feeds(inputs, batch=batch, seed=seed + i, dim_values=dim_values) for i in range(random or 1)]
