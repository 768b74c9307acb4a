"""The pass registry: every pass is one file in ``zhisuan.optimize.passes`` registered with a decorator.

A pass is a function ``(model, ctx) -> PassOutcome`` that may change ``model`` in place (the
driver hands it a private copy). It reports what it changed and which tensors it *renamed*
(old name -> the new name that carries the same value); the driver derives the pass's name
map from that plus the tensor names present before and after, so a pass only has to speak up
about renames, never about the unchanged or removed tensors.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from zhisuan.errors import UserError

#: Targets a pipeline can be built for. "onnx" means: standard ONNX operators only.
Target = Literal["onnxruntime", "openvino", "tensorrt", "onnx"]
TARGETS: tuple[Target, ...] = ("onnxruntime", "openvino", "tensorrt", "onnx")


@dataclass
class PassContext:
    """What a pass may read besides the model: the deployment target and user options."""

    target: Target = "onnxruntime"
    opset: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassOutcome:
    """What one application of a pass did. ``renamed`` maps old tensor -> tensor now carrying its value."""

    model: Any
    changed: bool = False
    details: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n
        self.changed = True


PassFn = Callable[[Any, PassContext], PassOutcome]


@dataclass(frozen=True)
class PassInfo:
    """A registered pass. ``once``: run in the first round of the fixpoint loop only.

    ``targets``: the backends whose runtime has every operator the pass may emit (None: any,
    the pass emits standard ONNX only).
    """

    name: str
    summary: str
    fn: PassFn
    once: bool = False
    targets: tuple[str, ...] | None = None

    @property
    def standard_onnx(self) -> bool:
        return self.targets is None

    def supports(self, target: str) -> bool:
        return self.targets is None or target in self.targets

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "summary": self.summary, "once": self.once,
            "targets": list(self.targets) if self.targets else None, "standard_onnx": self.standard_onnx,
        }


_REGISTRY: dict[str, PassInfo] = {}
_DISCOVERED = False


def register_pass(
    name: str, *, summary: str, once: bool = False, targets: tuple[str, ...] | None = None
) -> Callable[[PassFn], PassFn]:
    """Decorator that registers ``fn`` as the pass ``name`` (re-registering a name replaces it)."""

    def decorate(fn: PassFn) -> PassFn:
        _REGISTRY[name] = PassInfo(name, summary, fn, once, targets)
        return fn

    return decorate


def unregister_pass(name: str) -> None:
    """Remove a pass (tests register throwaway passes)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    from zhisuan.optimize import passes

    for mod in sorted(pkgutil.iter_modules(passes.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{passes.__name__}.{mod.name}")
    _DISCOVERED = True


def registry() -> dict[str, PassInfo]:
    _discover()
    return dict(_REGISTRY)


def available_passes() -> list[PassInfo]:
    """Every registered pass, in name order."""
    return [info for _, info in sorted(registry().items())]


def get_pass(name: str) -> PassInfo:
    passes = registry()
    if name not in passes:
        raise UserError(f"unknown pass {name!r} (available: {', '.join(sorted(passes))})")
    return passes[name]


#: The default pipeline: standard ONNX only, so the result runs on every backend and can still
#: be quantized. Backend-specific fusions (fuse-activation, transformer-fusion) are opt-in.
DEFAULT_PIPELINE = (
    "constants-to-initializers",
    "fold-constants",
    "eliminate-identity",
    "eliminate-dead",
    "fold-conv-bn",
    "fuse-hardswish",
    "fuse-hardsigmoid",
    "matmul-add-to-gemm",
    "onnxslim",
    "dedup-initializers",
    "strip-value-info",
)


def default_pipeline(target: str = "onnxruntime") -> list[str]:
    """The passes run when none are named: the default pipeline, less those the target lacks."""
    passes = registry()
    return [n for n in DEFAULT_PIPELINE if n in passes and passes[n].supports(target)]
