"""Reading ``.pth`` weights safely, and strict loading into a module built in code (the zoo's torch models)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors of a verified ``.pth`` file; ``weights_only=True`` refuses anything but tensors and containers.

    Call it only after the file's pinned sha256 matched (:meth:`zhisuan.zoo.base.WeightsFile.path`).
    """
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # an UnpicklingError when the file holds code or unknown objects
        raise UserError(f"{path}: not a plain tensor checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state)


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
