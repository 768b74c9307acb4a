"""Model packages: one validated directory with the model, its signature, processing, batching and checksums.

A package is what the server loads and what the repository stores::

    PKG/
      manifest.json      # name, version, format, signature (v2 datatypes), batching, processing,
                         # metadata, sha256 of every other file, and a sha256 of the manifest itself
      model.onnx         # or model.xml + model.bin (OpenVINO IR); ONNX external data files keep their names
      labels/...         # label files named by ``labels`` postprocessing steps, if any

``inputs`` and ``outputs`` of the manifest are what a *client* sends and receives: the model's
own signature seen through the preprocessing and postprocessing steps (the raw model signature
is kept in ``metadata["model_signature"]``). Shapes include the batch axis; -1 marks a dynamic
dim. :func:`load_package` verifies the manifest's form and every checksum before anything is
read, refuses files that are not listed, symlinks and pickles, and loads only ONNX and OpenVINO
IR. Nothing is ever unpickled.

>>> pkg = pack("efficientnet-lite0", "pkgs/effnet")  # doctest: +SKIP
>>> pkg = load_package("pkgs/effnet")  # doctest: +SKIP
>>> with pkg.open_runner(threads=2) as runner:  # doctest: +SKIP
...     out = pkg.postprocess(runner.run(pkg.preprocess({"image": images_uint8_nhwc})))
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import ChecksumError, UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record
from zhisuan.runtime.base import UNKNOWN_DTYPE, TensorSpec
from zhisuan.serve import processing
from zhisuan.serve.config import DEFAULT_LOG_DIR, MAX_BATCH_SIZE, MAX_QUEUE_DELAY_MS
from zhisuan.serve.datatypes import V2_TO_NUMPY, Datatype
from zhisuan.serve.processing import Sig

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime

__all__ = [
    "FORMATS",
    "MANIFEST",
    "RESERVED_NAMES",
    "SCHEMA",
    "BatchingConfig",
    "Package",
    "PackageFormat",
    "PackageManifest",
    "TensorSig",
    "load_package",
    "pack",
    "read_model_signature",
]

SCHEMA = "zhisuan.package/1"
MANIFEST = "manifest.json"


class PackageFormat(enum.StrEnum):
    """The model formats a package holds (both load without running code)."""

    ONNX = "onnx"
    OPENVINO = "openvino"  # IR: model.xml + model.bin


FORMATS = tuple(PackageFormat)
_DEFAULT_RUNTIME = {PackageFormat.ONNX: "onnxruntime", PackageFormat.OPENVINO: "openvino"}
_RUNTIMES = {PackageFormat.ONNX: ("onnxruntime", "openvino", "tensorrt"), PackageFormat.OPENVINO: ("openvino",)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Names the server keeps under a repository root beside the models: a model of that name would
# share the folder, and removing the model would delete the server's state. The repository's own
# entries (.lock, .tmp-*, .trash-*) and the rollout state start with '.', which no model name can.
RESERVED_NAMES = {DEFAULT_LOG_DIR: "the server keeps its request logs in REPO/logs"}
_MAX_MANIFEST_BYTES = 16 << 20
# Formats that run code when loaded (pickle and what wraps it); zhisuan never loads them.
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".sav", ".dill", ".npy", ".npz", ".mar")
_UNKNOWN_RANK = (-2,)  # marks a tensor whose rank the model file does not give (never written)
_RESERVED_METADATA = ("source", "zhisuan_version", "created_at", "model_signature", "onnx", "zoo")


# --- the manifest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSig(Record):
    """One tensor a client sends or receives: name, v2 datatype, shape with the batch axis (-1: dynamic).

    The manifest's form of a runtime :class:`~zhisuan.runtime.base.TensorSpec` (numpy dtype
    names, named or unknown dims): :meth:`from_spec` and :meth:`to_spec` convert between them.
    """

    name: str
    datatype: Datatype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.datatype, str) or self.datatype not in V2_TO_NUMPY:
            raise UserError(f"tensor {self.name!r}: unknown datatype {self.datatype!r}")
        object.__setattr__(self, "datatype", Datatype(self.datatype))

    @classmethod
    def from_spec(cls, spec: TensorSpec, *, ranked: bool = True) -> TensorSig:
        """``spec`` with its v2 datatype and -1 for every dim that is not a fixed size.

        ``ranked`` False: the model file does not give the tensor's rank (the shape is then a
        marker that packing refuses, never a shape that is written).
        """
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape) if ranked else _UNKNOWN_RANK
        return cls(spec.name, processing.v2_datatype(spec.dtype), shape)

    def to_spec(self) -> TensorSpec:
        """The runtime's view: numpy dtype name (``BYTES``: ``object``), ``None`` for a dynamic dim."""
        dtype = "object" if self.datatype == Datatype.BYTES else processing.numpy_dtype(self.datatype).name
        return TensorSpec(self.name, dtype, tuple(d if d >= 0 else None for d in self.shape))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TensorSig:
        if not isinstance(data, Mapping) or set(data) != {"name", "datatype", "shape"}:
            raise UserError(f"{where}: expected {{name, datatype, shape}}, got {data!r}")
        name, datatype, shape = data["name"], data["datatype"], data["shape"]
        if not isinstance(name, str) or not name:
            raise UserError(f"{where}: name must be a non-empty string")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            raise UserError(f"{where}: unknown datatype {datatype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape):
            raise UserError(f"{where}: shape must be a list of integers >= -1, got {shape!r}")
        return cls(name, Datatype(datatype), tuple(shape))

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return processing.numpy_dtype(self.datatype)


@dataclass(frozen=True)
class BatchingConfig(Record):
    """Dynamic batching: at most ``max_batch_size`` rows per model run, waiting at most ``max_queue_delay_ms``.

    ``max_batch_size`` 1 means the model is run one request at a time (a model whose first axis
    is not a dynamic batch axis is always packed with 1).
    """

    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        size = self.max_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            raise UserError(f"max batch size must be an integer >= 1 and <= {MAX_BATCH_SIZE}, got {size!r}")
        delay = self.max_queue_delay_ms
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_QUEUE_DELAY_MS:
            raise UserError(f"max queue delay must be 0..{MAX_QUEUE_DELAY_MS} ms, got {delay!r}")
        for size in self.preferred_batch_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= self.max_batch_size:
                raise UserError(
                    f"preferred batch sizes must be integers in 1..{self.max_batch_size}, got {list(self.preferred_batch_sizes)}"
                )

    @classmethod
    def from_dict(cls, data: Any) -> BatchingConfig:
        if not isinstance(data, Mapping) or not set(data) <= {"max_batch_size", "max_queue_delay_ms", "preferred_batch_sizes"}:
            raise UserError(f"manifest: batching must hold max_batch_size, max_queue_delay_ms, preferred_batch_sizes; got {data!r}")
        preferred = data.get("preferred_batch_sizes", [])
        if not isinstance(preferred, list):
            raise UserError("manifest: batching.preferred_batch_sizes must be a list")
        return cls(data.get("max_batch_size", 8), data.get("max_queue_delay_ms", 2.0), tuple(preferred))


@dataclass(frozen=True)
class PackageManifest(Record):
    """The contents of ``manifest.json`` (see the module docstring for the layout)."""

    name: str
    version: int
    format: PackageFormat
    model_file: str
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    batching: BatchingConfig
    runtime: str  # default backend, e.g. "onnxruntime"
    preprocess: tuple[dict[str, Any], ...]
    postprocess: tuple[dict[str, Any], ...]
    metadata: dict[str, Any]
    checksums: dict[str, str]  # relative file -> sha256

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON: ``schema`` first, then every field; checksums sorted by file."""
        return {"schema": SCHEMA, **super().to_dict(), "checksums": dict(sorted(self.checksums.items()))}

    @property
    def batchable(self) -> bool:
        return self.batching.max_batch_size > 1

    @classmethod
    def from_dict(cls, data: Any) -> PackageManifest:
        """Parse and check a manifest's form (not its files: see :func:`load_package`)."""
        if not isinstance(data, Mapping):
            raise UserError("manifest: expected a JSON object")
        expected = {
            "schema", "name", "version", "format", "model_file", "inputs", "outputs", "batching", "runtime",
            "preprocess", "postprocess", "metadata", "checksums",
        }
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected - {"manifest_sha256"})
        if missing:
            raise UserError(f"manifest: missing {', '.join(missing)}")
        if unknown:
            raise UserError(f"manifest: unknown field(s) {', '.join(unknown)}")
        if data["schema"] != SCHEMA:
            raise UserError(f"manifest: schema {data['schema']!r} is not {SCHEMA!r}; this zhisuan cannot read it")
        _check_name(data["name"])
        _check_version(data["version"])
        if data["format"] not in FORMATS:
            raise UserError(
                f"manifest: format {data['format']!r} is not loadable; zhisuan loads only {' and '.join(FORMATS)} "
                "(never pickles)"
            )
        if data["runtime"] not in _RUNTIMES[data["format"]]:
            raise UserError(f"manifest: runtime {data['runtime']!r} cannot load {data['format']}")
        for key in ("inputs", "outputs"):
            if not isinstance(data[key], list) or not data[key]:
                raise UserError(f"manifest: {key} must be a non-empty list")
        inputs = tuple(TensorSig.from_dict(d, f"manifest: inputs[{i}]") for i, d in enumerate(data["inputs"]))
        outputs = tuple(TensorSig.from_dict(d, f"manifest: outputs[{i}]") for i, d in enumerate(data["outputs"]))
        for key in ("metadata", "checksums"):
            if not isinstance(data[key], dict):
                raise UserError(f"manifest: {key} must be an object")
        checksums = data["checksums"]
        for rel, digest in checksums.items():
            _check_relpath(rel)
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise UserError(f"manifest: checksum of {rel!r} is not a sha256 hex digest")
        if not isinstance(data["model_file"], str) or data["model_file"] not in checksums:
            raise UserError(f"manifest: model_file {data['model_file']!r} is not among the checksummed files")
        return cls(
            name=data["name"],
            version=data["version"],
            format=PackageFormat(data["format"]),
            model_file=data["model_file"],
            inputs=inputs,
            outputs=outputs,
            batching=BatchingConfig.from_dict(data["batching"]),
            runtime=data["runtime"],
            preprocess=processing.validate_steps(data["preprocess"], stage="preprocess"),
            postprocess=processing.validate_steps(data["postprocess"], stage="postprocess"),
            metadata=dict(data["metadata"]),
            checksums=dict(checksums),
        )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(
            f"bad model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _check_new_name(name: Any) -> str:
    """A name for a new package: well formed and none of the server's own (compared case-folded,
    as a case-insensitive disk would). Existing packages are read with :func:`_check_name` only."""
    _check_name(name)
    why = RESERVED_NAMES.get(name.casefold())
    if why is not None:
        raise UserError(f"the model name {name!r} is reserved: {why}; choose another name")
    return name


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 10**9:
        raise UserError(f"bad version {version!r}: versions are integers >= 1")
    return version


def _check_relpath(rel: Any) -> None:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or ".." in rel.split("/") \
            or rel == MANIFEST:
        raise UserError(f"manifest: {rel!r} is not a relative path inside the package")


def _manifest_digest(data: Mapping[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the package ---------------------------------------------------------------------------------


class Package:
    """A verified package directory (made by :func:`load_package` or :func:`pack`)."""

    def __init__(self, path: Path, manifest: PackageManifest, labels: Mapping[int, list[str]] | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self._labels = dict(labels or {})
        self._request_specs = [s.to_spec() for s in manifest.inputs]

    def __repr__(self) -> str:
        return f"Package({self.manifest.name!r}, version={self.manifest.version}, path={str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def model_signature(self) -> dict[str, list[TensorSig]]:
        """The model's own inputs and outputs (before preprocessing / after postprocessing is undone)."""
        sig = self.manifest.metadata.get("model_signature") or {}
        return {
            side: [TensorSig.from_dict(d, f"model_signature.{side}") for d in sig.get(side, [])]
            for side in ("inputs", "outputs")
        }

    def verify(self) -> None:
        """Hash every file again against the manifest (raises :class:`~zhisuan.errors.ChecksumError`)."""
        _verify_files(self.path, self.manifest.checksums)

    def open_runner(self, *, runtime: str | None = None, threads: int | None = None) -> Runtime:
        """A :mod:`zhisuan.runtime` runner of the model, loaded from bytes that were hashed first.

        A single-file ONNX model is read once, hashed, and handed to the backend as those same
        bytes, so the file cannot change between the check and the load.
        """
        from zhisuan.runtime import load_runtime

        runtime = runtime or self.manifest.runtime
        if runtime not in _RUNTIMES[self.manifest.format]:
            raise UserError(
                f"{self.name} v{self.version} is {self.manifest.format}; runtime {runtime!r} cannot load it "
                f"(use {' or '.join(_RUNTIMES[self.manifest.format])})"
            )
        if threads is not None and threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        model_files = [f for f in self.manifest.checksums if not f.startswith("labels/")]
        source: Path | bytes
        if self.manifest.format == PackageFormat.ONNX and model_files == [self.manifest.model_file] and runtime != "tensorrt":
            data = self.model_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != self.manifest.checksums[self.manifest.model_file]:
                raise ChecksumError(f"{self.model_path}: sha256 does not match the package manifest; the file was modified")
            source = data
        else:
            _verify_files(self.path, {f: self.manifest.checksums[f] for f in model_files})
            source = self.model_path
        extra: dict[str, Any] = {}
        if runtime == "onnxruntime":
            from zhisuan.runtime.backend_onnxruntime import idle_pool_config

            # served batches arrive with gaps, in which the HTTP loop and the batcher need the cores
            extra["session_config"] = idle_pool_config(threads)
        runner = load_runtime(source, runtime, intra_op_threads=threads,
                              inter_op_threads=1 if runtime == "onnxruntime" else None, **extra)
        wanted = {s.name for s in self.model_signature["inputs"]}
        got = {s.name for s in runner.inputs()}
        if wanted and wanted != got:
            runner.close()
            raise UserError(f"{self.name} v{self.version}: {runtime} sees inputs {sorted(got)}, the manifest {sorted(wanted)}")
        return runner

    def check_request(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise one :class:`UserError` line if ``feeds`` do not fit the package's inputs."""
        from zhisuan.runtime.feeds import check_feeds

        check_feeds(feeds, self._request_specs)

    def preprocess(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Request tensors -> model inputs (checked against the package inputs first)."""
        self.check_request(feeds)
        if not self.manifest.preprocess:
            return feeds
        return processing.apply_steps(self.manifest.preprocess, feeds, stage="preprocess")

    def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model outputs -> response tensors."""
        if not self.manifest.postprocess:
            return outputs
        return processing.apply_steps(self.manifest.postprocess, outputs, stage="postprocess", labels=self._labels)

    def size_bytes(self) -> int:
        return sum((self.path / rel).stat().st_size for rel in self.manifest.checksums) + (self.path / MANIFEST).stat().st_size

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes(), **self.manifest.to_dict()}


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    # pickle protocol 2+ starts with PROTO (0x80) and the protocol number; torch.save writes a zip
    # holding data.pkl, and numpy .npy may embed pickles: zhisuan loads none of these.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04" \
        or head.startswith(b"\x93NUMPY")


def _refuse_pickle(path: Path, what: str, *, sniff: bool = True) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES or (sniff and _looks_like_pickle(path)):
        raise UserError(
            f"{what} {path.name} is a pickle-based or archive file; zhisuan never loads pickles "
            "(they can run code). Export the model to ONNX first (zhisuan convert)"
        )


def _verify_files(root: Path, checksums: Mapping[str, str]) -> None:
    from zhisuan._io import verify_sha256

    for rel, digest in checksums.items():
        path = root / rel
        if path.is_symlink() or not path.is_file():
            raise ChecksumError(f"{root}: package file {rel} is missing or not a regular file")
        verify_sha256(path, digest)


def _listed_files(root: Path) -> set[str]:
    found = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise UserError(f"{root}: package holds a symbolic link {rel}; packages hold only regular files")
        if path.is_file() and rel != MANIFEST:
            found.add(rel)
    return found


def read_manifest(path: str | os.PathLike[str]) -> tuple[PackageManifest, dict[str, Any]]:
    """Parse and check ``PKG/manifest.json`` (its form and self-digest, not the files)."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise UserError(f"package not found: {root} is not a directory")
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise UserError(f"{root} is not a zhisuan package: it has no {MANIFEST}")
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise UserError(f"{manifest_path} is larger than {_MAX_MANIFEST_BYTES >> 20} MiB; refusing to read it")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except RecursionError:  # json's decoder recurses once per nesting level
        raise UserError(f"{manifest_path} nests deeper than a manifest can; refusing to read it") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{manifest_path} is not valid JSON: {exc}") from None
    manifest = PackageManifest.from_dict(data)
    if data.get("manifest_sha256") != _manifest_digest(data):
        raise ChecksumError(f"{manifest_path}: the manifest was modified after it was written (its sha256 does not match)")
    return manifest, data


def load_package(path: str | os.PathLike[str]) -> Package:
    """Open the package at ``path`` after verifying its manifest and every file's sha256.

    Refused with a :class:`~zhisuan.errors.UserError`: a bad or edited manifest, a missing,
    modified or unlisted file, a symbolic link, a pickle, a format other than ONNX / OpenVINO IR,
    processing steps that do not fit the signature.
    """
    root = Path(path)
    if root.name == MANIFEST and root.is_file():
        root = root.parent
    manifest, _ = read_manifest(root)
    listed = set(manifest.checksums)
    present = _listed_files(root)
    if present - listed:
        raise UserError(f"{root}: files not in the manifest: {', '.join(sorted(present - listed))}")
    if listed - present:
        raise ChecksumError(f"{root}: files missing from the package: {', '.join(sorted(listed - present))}")
    for rel in listed:
        # Weights files (.bin, ONNX external data) are raw bytes that may start with anything;
        # only the files that get parsed are sniffed.
        parsed = rel == manifest.model_file or rel.startswith("labels/")
        _refuse_pickle(root / rel, "package file", sniff=parsed)
    _check_model_files(manifest, listed)
    _verify_files(root, manifest.checksums)
    labels = processing.load_labels(manifest.postprocess, root)
    _check_processing(manifest, root)
    return Package(root, manifest, labels)


def _check_model_files(manifest: PackageManifest, files: set[str]) -> None:
    suffix = Path(manifest.model_file).suffix.lower()
    if manifest.format == PackageFormat.ONNX and suffix != ".onnx":
        raise UserError(f"manifest: an onnx package's model_file must end in .onnx, got {manifest.model_file!r}")
    if manifest.format == PackageFormat.OPENVINO:
        if suffix != ".xml":
            raise UserError(f"manifest: an openvino package's model_file must be IR .xml, got {manifest.model_file!r}")
        weights = str(Path(manifest.model_file).with_suffix(".bin").as_posix())
        if weights not in files:
            raise UserError(f"manifest: OpenVINO IR {manifest.model_file} has no {weights}")


def _check_processing(manifest: PackageManifest, root: Path) -> None:
    sig = manifest.metadata.get("model_signature")
    if not isinstance(sig, Mapping):
        raise UserError("manifest: metadata.model_signature is missing")
    model_in = [TensorSig.from_dict(d, "model_signature.inputs") for d in sig.get("inputs", [])]
    model_out = [TensorSig.from_dict(d, "model_signature.outputs") for d in sig.get("outputs", [])]
    request, response = _outer_signature(model_in, model_out, manifest.preprocess, manifest.postprocess, root)
    if [s.to_dict() for s in request] != [s.to_dict() for s in manifest.inputs] or \
            [s.to_dict() for s in response] != [s.to_dict() for s in manifest.outputs]:
        raise UserError("manifest: inputs/outputs do not follow from the model signature and the processing steps")


# --- reading a model's signature -----------------------------------------------------------------


def read_model_signature(path: Path, fmt: PackageFormat) -> tuple[list[TensorSig], list[TensorSig], dict[str, Any]]:
    """Inputs, outputs (v2 datatypes, -1 for dynamic dims) and facts about the model file."""
    if fmt == PackageFormat.ONNX:
        return _onnx_signature(path)
    return _openvino_signature(path)


def _onnx_signature(path: Path) -> tuple[list[TensorSig], list[TensorSig], dict[str, Any]]:
    """The signature from :func:`zhisuan.runtime.onnx_signature.onnx_signature`, after shape inference
    where outputs lack shapes, and the facts (opsets, producer, external data files) of the file."""
    import onnx

    from zhisuan.runtime.onnx_signature import onnx_signature

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise UserError(f"cannot read ONNX model {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not proto.graph.node and not proto.graph.output:
        raise UserError(f"{path} is not an ONNX model (no graph)")
    typed = proto
    if any(not v.type.tensor_type.HasField("shape") for v in proto.graph.output):
        with contextlib.suppress(Exception):  # no inferred shapes: pack refuses the rank-unknown outputs
            typed = onnx.shape_inference.infer_shapes(proto)
    # What a TensorSpec cannot say: a value that is no tensor, and a tensor of unknown rank.
    initializers = {i.name for i in proto.graph.initializer}
    values = [*(v for v in typed.graph.input if v.name not in initializers), *typed.graph.output]
    for value in values:
        if not value.type.HasField("tensor_type"):
            raise UserError(f"{path}: {value.name!r} is not a tensor (sequences and maps cannot be served)")
    unranked = {v.name for v in values if not v.type.tensor_type.HasField("shape")}
    inputs, outputs = onnx_signature(typed)
    external = sorted({
        entry.value for init in proto.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data if entry.key == "location"
    })
    facts = {
        "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "ir_version": proto.ir_version,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "external_data": external,
    }
    return [_onnx_sig(s, unranked) for s in inputs], [_onnx_sig(s, unranked) for s in outputs], facts


def _onnx_sig(spec: TensorSpec, unranked: set[str]) -> TensorSig:
    if spec.dtype == UNKNOWN_DTYPE:  # an undeclared element type has always been packed as FP32
        spec = TensorSpec(spec.name, "float32", spec.shape)
    return TensorSig.from_spec(spec, ranked=spec.name not in unranked)


def _openvino_signature(path: Path) -> tuple[list[TensorSig], list[TensorSig], dict[str, Any]]:
    try:
        import openvino as ov
    except ImportError:
        from zhisuan.errors import BackendUnavailableError

        raise BackendUnavailableError("openvino", "packing OpenVINO IR needs it", "pip install openvino") from None
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise UserError(f"openvino cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None

    def sig(port: Any) -> TensorSig:
        partial = port.get_partial_shape()
        dims = tuple(d.get_length() if d.is_static else None for d in partial) if partial.rank.is_static else ()
        try:
            np_name = np.dtype(port.get_element_type().to_dtype()).name
        except Exception:
            np_name = port.get_element_type().get_type_name()
        return TensorSig.from_spec(TensorSpec(port.get_any_name(), np_name, dims), ranked=partial.rank.is_static)

    return [sig(p) for p in model.inputs], [sig(p) for p in model.outputs], {"openvino": ov.get_version()}


# --- making a package ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    path: Path
    format: PackageFormat
    zoo_name: str | None
    files: dict[str, Path]  # name in the package -> file on disk


def _resolve_source(model: str | os.PathLike[str], progress: Progress) -> _Source:
    path = Path(model)
    zoo_name = None
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the model file (.onnx, or .xml of OpenVINO IR)")
    if not path.exists():
        from zhisuan.inputs import resolve

        try:
            ref = resolve(str(model), accept=("zoo",))
        except UserError:
            from zhisuan import zoo

            hint = "" if path.suffix else f" nor a zoo model ({', '.join(zoo.names())})"
            raise UserError(f"model file not found: {model}{hint}") from None
        zoo_name = ref.zoo_name
        progress(f"{zoo_name}: exporting the zoo model (verified cache)")
        path = ref.file()
    _refuse_pickle(path, "model")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _Source(path, PackageFormat.ONNX, zoo_name, {"model.onnx": path})
    if suffix == ".xml":
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise UserError(f"OpenVINO IR {path.name} needs its weights {weights.name} next to it")
        return _Source(path, PackageFormat.OPENVINO, zoo_name, {"model.xml": path, "model.bin": weights})
    raise UserError(f"{path.name}: zhisuan packs ONNX (.onnx) or OpenVINO IR (.xml + .bin) models only")


def _batchable(inputs: Sequence[TensorSig], outputs: Sequence[TensorSig]) -> bool:
    return all(len(s.shape) >= 1 and s.shape[0] == -1 for s in (*inputs, *outputs))


def _sigs(tensors: Sequence[TensorSig]) -> dict[str, Sig]:
    return {t.name: Sig(t.datatype, t.shape) for t in tensors}


def _outer_signature(
    model_inputs: Sequence[TensorSig],
    model_outputs: Sequence[TensorSig],
    preprocess: Sequence[Mapping[str, Any]],
    postprocess: Sequence[Mapping[str, Any]],
    base: Path | None,
) -> tuple[list[TensorSig], list[TensorSig]]:
    """The request and response signatures: the model's, seen through the processing steps."""
    unknown = [s.name for s in (*model_inputs, *model_outputs) if s.shape == _UNKNOWN_RANK]
    if unknown:
        raise UserError(
            f"the model does not declare the rank of {unknown}, even after ONNX shape inference; "
            "a served model needs ranked inputs and outputs"
        )
    request = processing.request_signature(preprocess, _sigs(model_inputs))
    # Walk forward again: every step must fit what reaches it, and the result must be the model's inputs.
    forward = processing.forward_signature(preprocess, request, stage="preprocess", base=base)
    wanted = _sigs(model_inputs)
    for name, sig in wanted.items():
        got = forward.get(name)
        if got is None or got.datatype != sig.datatype or len(got.shape) != len(sig.shape) or any(
            g != w and w != -1 for g, w in zip(got.shape, sig.shape, strict=True)
        ):
            shown = f"{got.datatype} {list(got.shape)}" if got else "nothing"
            raise UserError(
                f"preprocessing gives {name!r} as {shown}, but the model takes {sig.datatype} {list(sig.shape)}"
            )
    response = processing.forward_signature(postprocess, _sigs(model_outputs), stage="postprocess", base=base)
    return (
        [TensorSig(name, s.datatype, s.shape) for name, s in request.items()],
        [TensorSig(name, s.datatype, s.shape) for name, s in response.items()],
    )


def zoo_defaults(
    zoo_name: str, model_inputs: Sequence[TensorSig], model_outputs: Sequence[TensorSig]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Path]]:
    """Processing steps from a zoo model's ``serving`` hook (only where they are obvious and exact),
    and the files they need; models without one get none."""
    from zhisuan import zoo

    defaults = zoo.get(zoo_name).serving_defaults(model_inputs, model_outputs)
    return [dict(s) for s in defaults.preprocess], [dict(s) for s in defaults.postprocess], dict(defaults.files)


def _copy_labels_files(
    steps: list[dict[str, Any]], files: dict[str, Path], where: str
) -> list[dict[str, Any]]:
    """Point ``labels_file`` steps at copies inside the package (``labels/<name>``)."""
    out = []
    for step in steps:
        step = dict(step)
        if step.get("op") == "labels" and isinstance(step.get("labels_file"), str):
            name = step["labels_file"]
            if name in files:  # already a package-relative file (zoo defaults)
                out.append(step)
                continue
            src = Path(name)
            if not src.is_file():
                raise UserError(f"{where}: labels file not found: {src}")
            processing.read_labels_file(src, where)
            rel = f"labels/{src.name}"
            if rel in files and files[rel].resolve() != src.resolve():
                raise UserError(f"{where}: two different labels files are named {src.name}")
            files[rel] = src
            step["labels_file"] = rel
        out.append(step)
    return out


@dataclass(frozen=True)
class StagedPackage:
    """A package built in a staging directory, waiting for its version and its rename into place."""

    staging: Path
    manifest: PackageManifest

    def finish(self, version: int) -> PackageManifest:
        """Write ``manifest.json`` with ``version`` (atomically) and return the final manifest."""
        from dataclasses import replace

        from zhisuan._io import atomic_write

        manifest = replace(self.manifest, version=_check_version(version))
        data = manifest.to_dict()
        data["manifest_sha256"] = _manifest_digest(data)
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        atomic_write(self.staging / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        _fsync_dir(self.staging)
        return manifest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashed(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def stage_package(
    model: str | os.PathLike[str],
    staging: Path,
    *,
    name: str | None = None,
    runtime: str | None = None,
    batching: BatchingConfig | None = None,
    preprocess: Sequence[Mapping[str, Any]] = (),
    postprocess: Sequence[Mapping[str, Any]] = (),
    metadata: Mapping[str, Any] | None = None,
    zoo_defaults_enabled: bool = True,
    progress: Progress = no_progress,
) -> StagedPackage:
    """Validate everything and copy the files into the empty directory ``staging`` (no manifest yet)."""
    from zhisuan import __version__

    source = _resolve_source(model, progress)
    name = _check_new_name(name if name is not None else (source.zoo_name or _default_name(source.path)))
    runtime = runtime or _DEFAULT_RUNTIME[source.format]
    if runtime not in _RUNTIMES[source.format]:
        raise UserError(f"runtime {runtime!r} cannot load {source.format}; use {' or '.join(_RUNTIMES[source.format])}")
    progress(f"{name}: reading the model signature")
    model_in, model_out, facts = read_model_signature(source.path, source.format)
    if not model_in or not model_out:
        raise UserError(f"{source.path} has no {'inputs' if not model_in else 'outputs'}; there is nothing to serve")

    files = dict(source.files)
    for rel in facts.get("external_data", []):
        _check_relpath(rel)
        data_file = source.path.parent / rel
        if not data_file.is_file():
            raise UserError(f"{source.path.name} keeps weights in {rel}, which is not next to it")
        files[rel] = data_file

    for stage, steps in (("preprocess", preprocess), ("postprocess", postprocess)):
        if not isinstance(steps, list | tuple):
            raise UserError(f"{stage} must be a list of steps, got {type(steps).__name__}")
    pre = processing.validate_steps(
        processing.with_default_sources(list(preprocess), stage="preprocess", signature=_sigs(model_in)),
        stage="preprocess",
    )
    post = processing.validate_steps(
        processing.with_default_sources(list(postprocess), stage="postprocess", signature=_sigs(model_out)),
        stage="postprocess",
    )
    defaults_used: list[str] = []
    if source.zoo_name and zoo_defaults_enabled:
        dpre, dpost, dfiles = zoo_defaults(source.zoo_name, model_in, model_out)
        if not pre and dpre:
            pre = tuple(dpre)
            defaults_used.append("preprocess")
        if not post and dpost:
            post = tuple(dpost)
            defaults_used.append("postprocess")
            files.update(dfiles)
    pre_list = _copy_labels_files(list(pre), files, "preprocess")
    post_list = _copy_labels_files(list(post), files, "postprocess")

    batchable = _batchable(model_in, model_out)
    batching = batching or BatchingConfig(max_batch_size=8 if batchable else 1)
    if batching.max_batch_size > 1 and not batchable:
        raise UserError(
            f"{name}: the model has no dynamic first (batch) axis on every input and output, so it cannot be "
            f"batched; use a max batch size of 1 (asked: {batching.max_batch_size})"
        )

    user_meta = dict(metadata or {})
    clash = sorted(set(user_meta) & set(_RESERVED_METADATA))
    if clash:
        raise UserError(f"metadata keys {clash} are reserved for what zhisuan records itself")
    try:
        json.dumps(user_meta)
    except (TypeError, ValueError) as exc:
        raise UserError(f"metadata must be JSON data: {exc}") from None

    progress(f"{name}: copying and hashing {len(files)} file(s)")
    checksums = {rel: _copy_hashed(src, staging / rel) for rel, src in sorted(files.items())}
    # Checked against the copies, as load_package will check them.
    request, response = _outer_signature(model_in, model_out, pre_list, post_list, staging)
    model_file = next(iter(source.files))
    meta: dict[str, Any] = {
        "source": {
            "kind": "zoo" if source.zoo_name else "file",
            "zoo_model": source.zoo_name,
            "path": str(source.path.resolve()),
            "sha256": checksums[model_file],
        },
        "zhisuan_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_signature": {"inputs": [s.to_dict() for s in model_in], "outputs": [s.to_dict() for s in model_out]},
        **({"onnx": {k: v for k, v in facts.items() if k != "external_data"}} if source.format == PackageFormat.ONNX else {}),
        **user_meta,
    }
    if source.zoo_name:
        from zhisuan import zoo

        entry = zoo.get(source.zoo_name)
        meta["zoo"] = {
            "task": entry.task, "license": entry.license, "summary": entry.summary,
            "preprocess": entry.preprocess, "postprocess": entry.postprocess,
            "defaults_applied": defaults_used,
        }
    manifest = PackageManifest(
        name=name,
        version=1,
        format=source.format,
        model_file=model_file,
        inputs=tuple(request),
        outputs=tuple(response),
        batching=batching,
        runtime=runtime,
        preprocess=tuple(pre_list),
        postprocess=tuple(post_list),
        metadata=meta,
        checksums=checksums,
    )
    return StagedPackage(staging, manifest)


def _default_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-._") or "model"
    return stem[:64]


def pack(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: int = 1,
    runtime: str | None = None,
    batching: BatchingConfig | None = None,
    preprocess: Sequence[Mapping[str, Any]] = (),
    postprocess: Sequence[Mapping[str, Any]] = (),
    metadata: Mapping[str, Any] | None = None,
    force: bool = False,
    zoo_defaults: bool = True,
    progress: Progress = no_progress,
) -> Package:
    """Package ``model`` (an ONNX / OpenVINO IR file or a zoo name) into the directory ``out``.

    The package is built in a temporary directory next to ``out`` and renamed into place, so
    ``out`` never holds half a package. An existing ``out`` is replaced only with ``force``.
    ``zoo_defaults`` applies a zoo model's documented processing when no steps are given.

    >>> pkg = pack("model.onnx", "pkg", name="mymodel", batching=BatchingConfig(16, 5.0))  # doctest: +SKIP
    """
    target = Path(out)
    _check_version(version)
    if target.exists() and not force:
        raise UserError(f"{target} already exists; use --force to replace it")
    if target.exists() and not (target / MANIFEST).is_file():
        raise UserError(f"{target} exists and is not a zhisuan package; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        staged = stage_package(
            model, staging, name=name, runtime=runtime, batching=batching, preprocess=preprocess,
            postprocess=postprocess, metadata=metadata, zoo_defaults_enabled=zoo_defaults, progress=progress,
        )
        staged.finish(version)
        staging.chmod(0o755)
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, trash / "pkg")
            os.rename(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_package(target)

