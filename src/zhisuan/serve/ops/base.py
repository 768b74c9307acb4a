"""What every processing op shares: the step it is given, the op interface, the registry, value checks.

An op is a class with the keys its steps take and the stages it runs in; it checks a step
against the tensor signatures it reads and says what it produces (:meth:`Op.forward`), and runs
it on numpy arrays (:meth:`Op.run`). Most ops read one tensor and write one: they derive from
:class:`TensorOp` and only say what that one tensor becomes (:meth:`TensorOp.signature`,
:meth:`TensorOp.compute`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from zhisuan.errors import UserError
from zhisuan.serve.datatypes import FLOAT_TYPES, NUMERIC_TYPES, Datatype, numpy_dtype, v2_datatype

__all__ = ["BOTH", "REGISTRY", "SOURCE_KEY", "Op", "Sig", "Stage", "Step", "TensorOp", "register"]

Stage = Literal["preprocess", "postprocess"]
BOTH: frozenset[Stage] = frozenset({"preprocess", "postprocess"})
#: the key that names the tensor a step reads, per stage
SOURCE_KEY: dict[Stage, str] = {"preprocess": "input", "postprocess": "output"}


@dataclass(frozen=True)
class Sig:
    """A tensor signature as processing sees it: v2 datatype and shape (-1 for a dynamic dim)."""

    datatype: Datatype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """One step as its op sees it: the step's JSON object and its place in its stage."""

    params: Mapping[str, Any]
    stage: Stage
    index: int

    @property
    def op(self) -> str:
        return str(self.params.get("op", "?"))

    @property
    def where(self) -> str:
        """How error messages name the step: ``postprocess step 2 (topk)``."""
        return f"{self.stage} step {self.index + 1} ({self.op})"

    @property
    def source(self) -> Any:
        return self.params[SOURCE_KEY[self.stage]]

    @property
    def target(self) -> Any:
        return self.params.get("as", self.source)


class Op(ABC):
    """One kind of processing step. Subclasses set the class variables and register with :func:`register`."""

    name: ClassVar[str]
    stages: ClassVar[frozenset[Stage]] = BOTH
    required: ClassVar[frozenset[str]] = frozenset()
    optional: ClassVar[frozenset[str]] = frozenset()

    def keys(self, stage: Stage) -> tuple[frozenset[str], frozenset[str]]:
        """The keys a step of this op must have and may have in ``stage`` (besides ``op``)."""
        return self.required, self.optional

    def check_form(self, step: Step) -> None:
        """The step belongs to this stage and has the keys it must, and no others."""
        if step.stage not in self.stages:
            raise UserError(
                f"{step.where}: {self.name} is a {'/'.join(sorted(self.stages))} op, not a {step.stage} op"
            )
        required, optional = self.keys(step.stage)
        keys = set(step.params) - {"op"}
        missing = sorted(required - keys)
        unknown = sorted(keys - required - optional)
        if missing:
            raise UserError(f"{step.where}: missing {', '.join(repr(k) for k in missing)}")
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise UserError(
                f"{step.where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; {self.name} takes {allowed}"
            )

    @abstractmethod
    def forward(self, step: Step, sigs: dict[str, Sig], *, base: Path | None) -> None:
        """Check the step's values against ``sigs`` and update ``sigs`` to the tensors after it.

        ``base`` is the directory that files the step names are relative to (None: as given).
        """

    @abstractmethod
    def run(self, step: Step, tensors: dict[str, np.ndarray], *, labels: Sequence[str] | None) -> None:
        """Run the (validated) step on ``tensors``, updating them in place.

        ``labels`` is the label list loaded for this step, for ops that read a file at load time.
        """


class TensorOp(Op):
    """An op that reads one tensor (``input`` / ``output``) and writes one or more (``as``, default: it)."""

    #: whether the tensor it reads must be numeric (not BYTES)
    numeric: ClassVar[bool] = True

    def keys(self, stage: Stage) -> tuple[frozenset[str], frozenset[str]]:
        return self.required | {SOURCE_KEY[stage]}, self.optional | {"as"}

    def forward(self, step: Step, sigs: dict[str, Sig], *, base: Path | None) -> None:
        where, source = step.where, step.source
        if not isinstance(source, str) or source not in sigs:
            raise UserError(f"{where}: no tensor {source!r} at this point (there are: {', '.join(sigs)})")
        target = step.target
        if not isinstance(target, str) or not target:
            raise UserError(f"{where}: 'as' must be a tensor name")
        sig = sigs[source]
        if self.numeric and sig.datatype not in NUMERIC_TYPES:
            raise UserError(f"{where}: {self.name} needs a numeric tensor; {source!r} is {sig.datatype}")
        sigs.update(self.signature(step, sig, base=base))
        if step.stage == "preprocess" and target != source:
            sigs.pop(source, None)  # the request tensor is renamed into a model input

    def run(self, step: Step, tensors: dict[str, np.ndarray], *, labels: Sequence[str] | None) -> None:
        source = step.source
        if source not in tensors:
            raise UserError(f"{step.where}: no tensor {source!r} (got: {', '.join(tensors)})")
        x = np.asarray(tensors[source])
        try:
            produced = self.compute(step, x, labels=labels)
        except UserError:
            raise
        except (ValueError, TypeError, IndexError, np.exceptions.AxisError) as exc:
            raise UserError(f"{step.where} failed on {source!r} {list(x.shape)} {x.dtype}: {exc}") from None
        tensors.update(produced)
        if step.stage == "preprocess" and step.target != source:
            tensors.pop(source, None)

    @abstractmethod
    def signature(self, step: Step, sig: Sig, *, base: Path | None) -> dict[str, Sig]:
        """Check the step's values against the signature of the tensor it reads; the tensors it writes."""

    @abstractmethod
    def compute(self, step: Step, x: np.ndarray, *, labels: Sequence[str] | None) -> dict[str, np.ndarray]:
        """The tensors the step writes, from the array it reads."""

    def request(self, step: Step, sig: Sig) -> Sig:
        """What clients send for a model input that this preprocessing step produces as ``sig``.

        Most ops keep the datatype and the shape a client sends; ``cast`` and ``transpose`` do not.
        """
        return sig


REGISTRY: dict[str, Op] = {}

_O = TypeVar("_O", bound=type[Op])


def register(cls: _O) -> _O:
    """Class decorator: make the op known under its ``name``."""
    REGISTRY[cls.name] = cls()
    return cls


# --- checks of step values ---------------------------------------------------------------------
def number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what} must be an integer, got {value!r}")
    return value


def datatype(value: Any, what: str) -> Datatype:
    if not isinstance(value, str):
        raise UserError(f"{what} must be a datatype name such as 'float32' or 'FP32', got {value!r}")
    try:
        return v2_datatype(value)
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None


def float_dtype(value: Any, what: str) -> Datatype:
    result = datatype(value, what)
    if result not in FLOAT_TYPES or result is Datatype.BF16:
        raise UserError(f"{what} must be a float type (float16, float32, float64), got {value!r}")
    return result


def axis(value: Any, rank: int, what: str) -> int:
    index = integer(value, what)
    if not -rank <= index < rank:
        raise UserError(f"{what} {index} is out of range for a rank-{rank} tensor")
    return index % rank


def at_least_one_axis(step: Step, sig: Sig) -> int:
    """The rank of ``sig``, which must have an axis for the op to work along."""
    if not sig.shape:
        raise UserError(f"{step.where}: {step.op} needs a tensor with at least one axis")
    return len(sig.shape)


def float_result(datatype_: Datatype, asked: Datatype | None) -> Datatype:
    """Arithmetic keeps a float input's type and turns an integer input into FP32 (or ``dtype``)."""
    if asked is not None:
        return asked
    return datatype_ if datatype_ in FLOAT_TYPES else Datatype.FP32


def asked_float(step: Step) -> Datatype | None:
    """The float type a step's optional ``dtype`` asks for (None: none asked)."""
    return float_dtype(step.params["dtype"], f"{step.where}: 'dtype'") if "dtype" in step.params else None


def as_float(x: np.ndarray, step: Step) -> np.ndarray:
    """``x`` in the float type arithmetic on it gives (see :func:`float_result`)."""
    asked = step.params.get("dtype")
    dtype = numpy_dtype(float_result(v2_datatype(x.dtype), asked and v2_datatype(asked)))
    return x if x.dtype == dtype else x.astype(dtype)
