"""Writers of each deployable form, from a checked ONNX file into a staging directory.

Each writer takes an ONNX file and writes its target's file(s) into ``stage`` (a temporary
directory on the output's file system), returning their paths; :func:`zhisuan.convert.convert`
checks them numerically and only then renames them into place, so a failed conversion never
leaves a half-written or unchecked file at the output path.
"""

from __future__ import annotations

import importlib.util
import shutil
from enum import StrEnum
from pathlib import Path

from zhisuan.errors import BackendUnavailableError, UserError

__all__ = ["ORT_LEVELS", "OrtLevel", "parse_ort_level", "require_tensorrt", "write_openvino", "write_ort",
           "write_tensorrt"]


class OrtLevel(StrEnum):
    """The ONNX Runtime offline optimization levels ``--to ort`` offers (see :func:`write_ort`)."""

    BASIC = "basic"
    EXTENDED = "extended"


ORT_LEVELS: tuple[OrtLevel, ...] = tuple(OrtLevel)


def parse_ort_level(level: str) -> OrtLevel:
    """``level`` as an :class:`OrtLevel`; another name is a :class:`UserError` listing the levels."""
    if level not in ORT_LEVELS:
        raise UserError(f"unknown ORT optimization level {level!r}; choose {', '.join(ORT_LEVELS)}")
    return OrtLevel(level)


TENSORRT_HINT = "pip install tensorrt (needs an NVIDIA GPU)"


def write_ort(onnx_path: Path, stage: Path, name: str, *, level: OrtLevel | str = OrtLevel.EXTENDED) -> Path:
    """ONNX Runtime's offline-optimized model (``.onnx``) or ORT format (``.ort``) for CPU.

    ``extended`` (the default) adds ORT's fusions (GELU, LayerNorm, attention, MatMul+Add...) as
    ``com.microsoft`` contrib operators: the file runs on ONNX Runtime only, on any machine.
    ``basic`` keeps standard ONNX operators (constant folding, redundant-node removal), so any
    runtime can load it. ``all`` is not offered: it writes CPU-specific layouts (NCHWc) that tie
    the file to the machine it was made on.
    """
    from zhisuan.runtime import load_runtime

    level = parse_ort_level(level)
    target = stage / name
    # What onnxruntime.tools.convert_onnx_models_to_ort does for one model, without a subprocess.
    session_config = {"session.save_model_format": "ORT"} if target.suffix == ".ort" else {}
    try:
        # ORT writes the optimized graph while it makes the session; the session itself is not needed.
        load_runtime(onnx_path, "onnxruntime", graph_optimization_level=level.value, optimized_model_path=target,
                     session_config=session_config).close()
    except UserError as exc:
        raise UserError(f"onnxruntime could not optimize the model: {exc}") from None
    if not target.is_file():
        raise UserError(f"onnxruntime wrote no optimized model to {target}")
    return target


def write_openvino(onnx_path: Path, stage: Path, name: str) -> tuple[Path, Path]:
    """OpenVINO IR (``name.xml`` + ``name.bin``) with float32 weights kept as float32.

    ``openvino.save_model`` compresses weights to f16 by default (an IR saved that way was off by
    4e-4 here), so ``compress_to_fp16=False`` is passed explicitly.
    """
    if importlib.util.find_spec("openvino") is None:
        raise BackendUnavailableError("openvino", "openvino is not installed", "pip install openvino")
    import openvino as ov

    xml = stage / name
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(xml), compress_to_fp16=False)
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from")]
        raise UserError(f"openvino could not convert the model: {(lines or [type(exc).__name__])[-1]}") from None
    return xml, xml.with_suffix(".bin")


def require_tensorrt() -> None:
    """Raise :class:`BackendUnavailableError` unless the ``tensorrt`` package can be imported."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError("tensorrt", "the tensorrt Python package is not installed", TENSORRT_HINT)


def write_tensorrt(onnx_path: Path, stage: Path, name: str, *, max_batch: int = 16) -> Path:
    """A TensorRT engine built by the tensorrt runtime backend (cached, sha256-verified), copied out."""
    require_tensorrt()
    from zhisuan._io import cache_dir
    from zhisuan.runtime import load_runtime

    with load_runtime(onnx_path, "tensorrt", device="cuda", max_batch=max_batch) as rt:
        key = rt.info.details.get("engine_key")
    engine = cache_dir("tensorrt") / f"{key}.engine"
    if not key or not engine.is_file():
        raise UserError("the tensorrt backend built an engine but did not cache it; cannot copy it out")
    target = stage / name
    shutil.copyfile(engine, target)
    return target
