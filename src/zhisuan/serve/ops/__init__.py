"""The pre- and post-processing ops: one op per module, each registering its class with ``@register``.

Modules here are discovered, not listed: a new op is a new file. :mod:`zhisuan.serve.processing`
drives them (validates a stage's steps, forwards signatures through them, runs them).

>>> from zhisuan.serve.ops import OPS
>>> "softmax" in OPS and "labels" in OPS
True
"""

from __future__ import annotations

import importlib
import pkgutil

from zhisuan.errors import UserError
from zhisuan.serve.ops.base import REGISTRY, Op, Step

__all__ = ["OPS", "get_op"]

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

#: every op's name, sorted
OPS: tuple[str, ...] = tuple(sorted(REGISTRY))


def get_op(step: Step) -> Op:
    """The op a step names; an unknown op is a :class:`UserError` listing the known ones."""
    name = step.params.get("op")
    op = REGISTRY.get(name) if isinstance(name, str) else None
    if op is None:
        raise UserError(f"{step.where}: unknown op {name!r}; known: {', '.join(OPS)}")
    return op
