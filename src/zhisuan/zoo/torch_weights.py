"""Strict loading of a state dict into a module built in code (the zoo's torch models)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zhisuan.errors import UserError


def load_state_strict(
    module: Any, state: Mapping[str, Any], *, what: str, source: str = "weights", ignore: Iterable[str] = ()
) -> None:
    """Load ``state`` into ``module``: every parameter and buffer present with its shape, no unknown key.

    Keys in ``ignore`` may be left over (weights the architecture does not use). Raises one
    :class:`UserError` that lists what is missing, unexpected and of the wrong shape.
    """
    wanted = module.state_dict()
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted) - set(ignore))
    wrong = sorted(k for k in set(wanted) & set(state) if tuple(state[k].shape) != tuple(wanted[k].shape))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}")
    if wrong:
        problems.append(f"shape mismatch for: {', '.join(wrong[:5])}")
    if problems:
        raise UserError(f"{source} do not fit {what}: " + "; ".join(problems))
    module.load_state_dict({k: state[k] for k in wanted}, strict=True)
