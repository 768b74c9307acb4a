"""What a user names: one :class:`ModelRef` for a model, one :class:`InputSource` for its inputs.

Every command and API that takes a model or data resolves it here, so "is this a file, a zoo name,
a package or a PyTorch factory" and "where do the inputs come from" are decided in one place.

Glossary (used in code, docs and JSON):

- *feed*: one run's inputs, ``{input name: array}``;
- *batch*: the first axis of a feed's arrays, and the number of rows on it;
- *sample*: one row of a batch (one image, one sentence, one audio window);
- *reading*: one telemetry value (a power or utilisation figure at a time);
- *repeat*: one timed measurement of a benchmark.

Inputs come from, in this order: ``data`` (``.npz`` files keyed by input name: one file or a
directory of them), ``random`` (that many seeded random feeds made from the signature), a zoo
model's realistic inputs of a *split* (``calib``: disjoint from the evaluation set; ``eval``: the
evaluation set's own inputs), else one seeded random feed.

>>> ref = resolve("ppocr-cls")          # doctest: +SKIP
>>> ref.kind, ref.zoo_name
('zoo', 'ppocr-cls')
>>> source = input_source(ref, random=2, seed=0)  # doctest: +SKIP
>>> len(source.feeds(ref.file()))       # doctest: +SKIP
2
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zhisuan._io import verify_sha256
from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

if TYPE_CHECKING:
    from zhisuan.runtime.base import TensorSpec, TorchModel
    from zhisuan.zoo.base import ZooEntry

__all__ = [
    "CALIB_SEED",
    "FACTORY_PATTERN",
    "METRIC_SEED",
    "Feed",
    "InputSource",
    "Inputs",
    "ModelKind",
    "ModelRef",
    "Split",
    "input_source",
    "is_factory",
    "model_inputs",
    "refuse_pickle",
    "resolve",
    "resolve_model",
    "sample_inputs",
]

Feed = dict[str, np.ndarray]
Split = Literal["calib", "eval"]
ModelKind = Literal["onnx", "openvino", "zoo", "package", "torch"]
SourceKind = Literal["npz", "random", "zoo"]

#: Seeds of realistic zoo inputs: calibration, and held-out metric inputs. The zoo's evaluators
#: use seed 0, so neither ever sees the evaluation set.
CALIB_SEED = 1_000_003
METRIC_SEED = 2_000_003

#: ``module.sub:function``: a PyTorch factory that builds a module in code.
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_PICKLE_SUFFIXES = (".pt", ".pth", ".pt2", ".ckpt", ".bin", ".pkl", ".pickle")
#: The file a serving package (``zhisuan pack``) describes itself in.
PACKAGE_MANIFEST = "manifest.json"
_MAX_MANIFEST_BYTES = 16 << 20

def is_factory(source: str) -> bool:
    return bool(FACTORY_PATTERN.match(source))


def refuse_pickle(source: str) -> None:
    """Refuse pickle-based model files by name, before anything opens them."""
    if source.lower().endswith(_PICKLE_SUFFIXES):
        raise UserError(
            f"{source}: zhisuan never unpickles model files (loading one can run arbitrary code); name a "
            "factory `module:function` that builds the module in code and loads weights with "
            "torch.load(weights_only=True) or safetensors"
        )


# ---------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class ModelRef(Record):
    """A model as the user named it, resolved.

    ``kind``: ``onnx`` / ``openvino`` (a file), ``zoo`` (a zoo name; its ONNX file is the verified
    cached export, built on first use by :meth:`file`), ``package`` (a ``zhisuan pack`` directory,
    e.g. a repository version: its model file after its sha256 matched the manifest) or ``torch``
    (a ``module:function`` factory, which :mod:`zhisuan.convert` turns into ONNX).
    ``zoo_name`` is set for zoo models and for packages made from one, so their realistic inputs
    and metrics follow them.
    """

    name: str
    kind: ModelKind
    path: Path | None = None
    zoo_name: str | None = None

    @property
    def entry(self) -> ZooEntry | None:
        from zhisuan import zoo

        return zoo.get(self.zoo_name) if self.zoo_name else None

    @property
    def is_file(self) -> bool:
        return self.kind in ("onnx", "openvino")

    def file(self, *, progress: Progress = no_progress) -> Path:
        """The model file to load (a zoo model is exported, or reused from the verified cache)."""
        if self.path is not None:
            return self.path
        if self.kind == "zoo" and self.zoo_name:
            from zhisuan import zoo

            return zoo.export(self.zoo_name, progress=progress).path
        raise UserError(
            f"{self.name} is a PyTorch factory; convert it to ONNX first (zhisuan convert {self.name} -o model.onnx)"
        )

    def torch_model(self) -> TorchModel:
        """The PyTorch module of a zoo model (``--runtime torch``)."""
        entry = self.entry
        if entry is None:
            raise UserError(f"--runtime torch runs a zoo model's PyTorch module; {self.name} is a {self.kind} model")
        if entry.torch_model is None:
            raise UserError(f"{entry.name} has no PyTorch module (it ships as ONNX); use an ONNX runtime")
        return entry.torch_model()


def resolve(source: str | Path | ModelRef, *, accept: Collection[ModelKind] | None = None) -> ModelRef:
    """Resolve what the user named: an existing file, a package directory, a zoo name or a factory.

    ``accept`` limits the kinds a command takes; anything else is a :class:`UserError` naming what
    it is. A file name that does not exist, or a name that is nothing known, is a UserError too.
    """
    ref = source if isinstance(source, ModelRef) else _resolve(str(source))
    if accept is not None and ref.kind not in accept:
        kinds = [_KIND_TEXT[k] for k in accept]
        wanted = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " or " + kinds[-1]
        raise UserError(f"{ref.name} is {_KIND_TEXT[ref.kind]}; this command takes {wanted}")
    return ref


_KIND_TEXT: dict[ModelKind, str] = {
    "onnx": "an ONNX file", "openvino": "an OpenVINO IR file", "zoo": "a zoo model",
    "package": "a zhisuan package", "torch": "a PyTorch factory (module:function)",
}


def _resolve(text: str) -> ModelRef:
    from zhisuan import zoo

    path = Path(text)
    if path.is_file():
        refuse_pickle(text)
        return ModelRef(text, "openvino" if path.suffix.lower() == ".xml" else "onnx", path)
    if path.is_dir():
        if (path / PACKAGE_MANIFEST).is_file():
            return _package(path)
        raise UserError(f"{path} is a directory but not a zhisuan package (it has no {PACKAGE_MANIFEST})")
    if text in zoo.names():
        return ModelRef(text, "zoo", None, text)
    refuse_pickle(text)
    if is_factory(text):
        return ModelRef(text, "torch")
    if path.suffix:
        raise UserError(f"model file not found: {path}")
    raise UserError(f"{text!r} is neither a file nor a zoo model ({', '.join(zoo.names())})")


def _package(root: Path) -> ModelRef:
    """The model file of a package, verified against the sha256 its manifest lists.

    Only what running the model needs is read here; :func:`zhisuan.serve.package.load_package`
    checks the whole package (every file, processing steps) before serving it.
    """
    manifest_path = root / PACKAGE_MANIFEST
    if manifest_path.is_symlink() or manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise UserError(f"{manifest_path}: refusing to read a symbolic link or a manifest over 16 MiB")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        model_file = str(data["model_file"])
        digest = str(data["checksums"][model_file])
        source = data.get("metadata", {}).get("source", {})
    except RecursionError:  # json's decoder recurses once per nesting level
        raise UserError(f"{manifest_path} nests deeper than a manifest can; refusing to read it") from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{manifest_path} is not a zhisuan package manifest ({type(exc).__name__}: {exc})") from None
    model = (root / model_file).resolve()
    if root.resolve() not in model.parents or not model.is_file() or (root / model_file).is_symlink():
        raise UserError(f"{root}: the manifest's model file {model_file!r} is not a file inside the package")
    refuse_pickle(model_file)
    verify_sha256(model, digest)
    zoo_name = source.get("zoo_model") if isinstance(source, Mapping) else None
    from zhisuan import zoo

    return ModelRef(str(root), "package", model, zoo_name if zoo_name in zoo.names() else None)


def resolve_model(source: str | Path | ModelRef) -> Path:
    """The model file of ``source``: an existing file, a package's verified model, or a zoo export."""
    return resolve(source, accept=("onnx", "openvino", "zoo", "package")).file()


def model_inputs(model: str | Path | Any) -> list[TensorSpec]:
    """Input specs of an ONNX file or ``onnx.ModelProto`` (graph inputs that are not initializers)."""
    from zhisuan.runtime.onnx_signature import onnx_signature

    if not isinstance(model, str | Path) and not hasattr(model, "graph"):
        raise UserError(f"expected an ONNX file or an onnx.ModelProto, got {type(model).__name__}")
    inputs, _ = onnx_signature(model)
    return list(inputs)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Inputs:
    """Feeds as made, with the label of where they really came from (a zoo source whose data is
    not installed makes random feeds, and says so)."""

    feeds: list[Feed]
    label: str
    realistic: bool


@dataclass(frozen=True)
class InputSource:
    """Where a command's feeds come from; :meth:`feeds` makes them for a model's signature.

    ``label`` is what reports record: ``npz:PATH``, ``random`` or ``zoo:NAME``
    (``zoo:NAME:eval`` for the evaluation split).
    """

    kind: SourceKind
    path: Path | None = None
    zoo_name: str | None = None
    split: Split = "calib"
    count: int = 1  # feeds to make (random, zoo); an .npz source has as many as its files
    batch: int = 1  # rows per random feed
    seed: int = 0
    dim_values: Mapping[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.kind == "npz":
            return f"npz:{self.path}"
        if self.kind == "zoo":
            return f"zoo:{self.zoo_name}" + (":eval" if self.split == "eval" else "")
        return "random"

    @property
    def realistic(self) -> bool:
        """False for random inputs: a poor proxy for real data (activation ranges, accuracy)."""
        return self.kind != "random"

    def feeds(self, model: str | Path | Any | Sequence[TensorSpec]) -> list[Feed]:
        """The feeds, checked against the model's inputs (an ONNX file, ModelProto or input specs)."""
        return self.make(model).feeds

    def make(self, model: str | Path | Any | Sequence[TensorSpec]) -> Inputs:
        """The feeds and where they came from (see :class:`Inputs`)."""
        from zhisuan.runtime.feeds import load_feeds, random_feeds

        if self.kind == "npz" and self.path is not None:
            feeds = load_feeds(self.path, specs=_specs(model))
            if not feeds:
                raise UserError(f"no .npz inputs found in {self.path}")
            return Inputs(feeds, self.label, True)
        if self.kind == "zoo" and self.zoo_name is not None:
            from zhisuan import zoo

            made = zoo.get(self.zoo_name).realistic_inputs(self.split, batches=self.count, seed=self.seed)
            if made:
                return Inputs(made, self.label, True)
            # else the data they are made from is not installed: random feeds stand in, labelled so
        specs = _specs(model)
        dims = dict(self.dim_values) or None
        feeds = [random_feeds(specs, batch=self.batch, seed=self.seed + i, dim_values=dims) for i in range(self.count)]
        return Inputs(feeds, "random", False)


def _specs(model: Any) -> list[TensorSpec]:
    if isinstance(model, Sequence) and not isinstance(model, str):
        return list(model)
    return model_inputs(model)


def input_source(
    model: ModelRef | str | None = None,
    *,
    data: str | Path | None = None,
    random: int | None = None,
    split: Split = "calib",
    count: int = 1,
    batch: int = 1,
    seed: int = 0,
    dim_values: Mapping[str, int] | None = None,
) -> InputSource:
    """The source of a command's inputs from its ``--data`` / ``--random`` options.

    ``data`` and ``random`` are exclusive; with neither, a zoo model (``model`` a zoo ModelRef or
    zoo name) that has realistic inputs gets ``count`` feeds of its ``split``, anything else
    ``count`` seeded random feeds (random values are not valid inputs for every model: Silero
    VAD's ``sr`` must be a sample rate).
    """
    if data is not None and random is not None:
        raise UserError("give either --data or --random, not both")
    if random is not None and random < 1:
        raise UserError(f"--random must be >= 1, got {random}")
    dims = dict(dim_values or {})
    if data is not None:
        return InputSource("npz", path=Path(data), seed=seed, dim_values=dims)
    if random is not None:
        return InputSource("random", count=random, batch=batch, seed=seed, dim_values=dims)
    zoo_name = model.zoo_name if isinstance(model, ModelRef) else model
    if zoo_name:
        from zhisuan import zoo

        if zoo_name in zoo.names() and zoo.get(zoo_name).inputs is not None:
            return InputSource("zoo", zoo_name=zoo_name, split=split, count=count, batch=batch, seed=seed,
                               dim_values=dims)
    return InputSource("random", count=count, batch=batch, seed=seed, dim_values=dims)


def sample_inputs(
    model: str | Path | Any,
    *,
    data: str | Path | None = None,
    random: int | None = None,
    seed: int = 0,
    batch: int = 1,
    dim_values: dict[str, int] | None = None,
    zoo_name: str | None = None,
) -> list[Feed]:
    """Feeds for ``model`` (an ONNX file or ModelProto): ``data``, ``random`` feeds, or one realistic
    zoo feed (``zoo_name``, held-out seed), else one random feed. See :func:`input_source`."""
    source = input_source(zoo_name, data=data, random=random, count=random or 1, batch=batch, seed=seed,
                          dim_values=dim_values)
    if source.kind == "zoo" and zoo_name is not None:
        from zhisuan import zoo

        realistic = zoo.get(zoo_name).realistic_inputs("calib", batches=1, seed=METRIC_SEED)
        if realistic:
            return realistic[:1]
        source = InputSource("random", batch=batch, seed=seed, dim_values=source.dim_values)
    return source.feeds(model)
