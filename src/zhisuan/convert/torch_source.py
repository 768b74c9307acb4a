"""A PyTorch model named on the command line as ``module:function``, and its sample inputs.

The factory contract
--------------------
``SRC`` is ``package.module:function`` (importable from the current directory or ``sys.path``,
like ``python -m`` or ``uvicorn app:app``). Importing it runs the user's own code, which is the
point; zhisuan never unpickles a model file (``.pt``/``.pth`` sources are refused).
``function()`` is called with no arguments and returns either

* an ``nn.Module`` — example inputs then come from ``--input-shape name:1x3x224x224[:dtype]``
  (seeded random: floats standard normal, integers in ``[0, 100)``), or from the module's
  ``example_inputs`` attribute (a tensor or tuple of tensors); or
* ``(module, example_inputs)`` where ``example_inputs`` is a tensor, a tuple of tensors in
  ``forward``'s order, or a dict ``{parameter name: tensor}`` in ``forward``'s order.

Input names are the dict keys, else the ``--input-shape`` names, else ``forward``'s parameter
names. Output names are the module's ``output_names`` attribute if it has one, else ``output``
(one output) or ``output_0``, ``output_1``, ... .

Check inputs
------------
The export is checked on the trace inputs *and* on inputs with other values
(:func:`other_inputs`): floating inputs are drawn around the *negated* mean of the trace inputs
with their spread, so a branch on the sign of a sum or mean (``if x.sum() > 0``) takes the other
side; integer inputs are redrawn in their observed range; with a dynamic batch the batch size
changes too (1 -> 3). A sample the module itself refuses (torch raises) is replaced by a
same-sign perturbation of the trace inputs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zhisuan.errors import UserError
from zhisuan.inputs import FACTORY_PATTERN, is_factory, refuse_pickle

if TYPE_CHECKING:
    import torch

__all__ = ["FACTORY_PATTERN", "TorchSource", "is_factory", "load_factory", "other_inputs", "parse_input_shape", "refuse_pickle"]



@dataclass(frozen=True)
class TorchSource:
    """A module built by a factory, with named example inputs and output names."""

    spec: str
    module: torch.nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...], str]:
    """``name:1x3x224x224[:dtype]`` -> (name, shape, numpy dtype name).

    >>> parse_input_shape("x:1x3x8x8"), parse_input_shape("ids:2x16:int64")
    (('x', (1, 3, 8, 8), 'float32'), ('ids', (2, 16), 'int64'))
    """
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise UserError(f"bad --input-shape {text!r}; expected name:1x3x224x224 or name:2x16:int64")
    try:
        shape = tuple(int(d) for d in parts[1].lower().split("x")) if parts[1] else ()
    except ValueError:
        raise UserError(f"bad --input-shape {text!r}: dimensions must be integers separated by 'x'") from None
    if any(d < 1 for d in shape):
        raise UserError(f"bad --input-shape {text!r}: dimensions must be at least 1")
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in ("float32", "float16", "float64", "int64", "int32", "bool"):
        raise UserError(f"bad --input-shape dtype {dtype!r}; use float32, float16, float64, int64, int32 or bool")
    return parts[0], shape, dtype


def load_factory(spec: str, *, input_shapes: Sequence[str] = (), seed: int = 0) -> TorchSource:
    """Import ``module:function``, call it, and name its inputs and outputs (see the module docstring)."""
    import torch

    if not is_factory(spec):
        raise UserError(f"{spec!r} is not a factory; expected package.module:function")
    module_name, func_name = spec.split(":", 1)
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # like `python -m` and uvicorn: the current directory is importable
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r} for factory {spec!r}: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    func: Any = mod
    for part in func_name.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise UserError(f"{module_name!r} has no {func_name!r} (factory {spec!r})")
    if not callable(func):
        raise UserError(f"{spec!r} is not callable")
    built = func()
    example: Any = None
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module):
        built, example = built
    if not isinstance(built, torch.nn.Module):
        raise UserError(
            f"factory {spec!r} returned {type(built).__name__}; it must return an nn.Module or (module, example_inputs)"
        )
    module = built.eval()
    if example is None:
        example = getattr(module, "example_inputs", None)
    if example is not None and input_shapes:
        raise UserError(f"factory {spec!r} already gives example inputs; drop --input-shape")
    params = _forward_params(module)
    if example is None:
        if not input_shapes:
            raise UserError(
                f"factory {spec!r} gives no example inputs; return (module, inputs) or pass "
                "--input-shape name:1x3x224x224 for each input"
            )
        parsed = [parse_input_shape(s) for s in input_shapes]
        gen = torch.Generator().manual_seed(seed)
        args = tuple(_random_tensor(shape, dtype, gen) for _, shape, dtype in parsed)
        names = tuple(name for name, _, _ in parsed)
    elif isinstance(example, Mapping):
        names, args = tuple(example), tuple(example.values())
    elif isinstance(example, torch.Tensor):
        args = (example,)
        names = tuple(params[:1]) or ("input",)
    elif isinstance(example, tuple | list):
        args = tuple(example)
        names = tuple(params[: len(args)]) if len(params) >= len(args) else tuple(f"input_{i}" for i in range(len(args)))
    else:
        raise UserError(f"factory {spec!r}: example inputs must be a tensor, tuple or dict, not {type(example).__name__}")
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise UserError(f"factory {spec!r}: every example input must be a tensor")
    with torch.inference_mode():
        try:
            result = module(*args)
        except Exception as exc:
            raise UserError(f"factory {spec!r}: the module fails on its example inputs: {type(exc).__name__}: {exc}") from None
    count = len(result) if isinstance(result, tuple | list) else 1
    out_names = getattr(module, "output_names", None)
    if out_names is None:
        out_names = ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))
    out_names = tuple(out_names)
    if len(out_names) != count:
        raise UserError(f"factory {spec!r}: output_names has {len(out_names)} names for {count} outputs")
    return TorchSource(spec, module, args, names, out_names)


def _forward_params(module: torch.nn.Module) -> list[str]:
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _random_tensor(shape: tuple[int, ...], dtype: str, gen: torch.Generator) -> torch.Tensor:
    import torch

    if dtype.startswith("float"):
        return torch.randn(shape, generator=gen).to(getattr(torch, dtype))
    if dtype == "bool":
        return torch.rand(shape, generator=gen) < 0.5
    return torch.randint(0, 100, shape, generator=gen, dtype=getattr(torch, dtype))


def other_inputs(
    module: torch.nn.Module, args: Sequence[torch.Tensor], *, batch: int | None = None, seed: int = 1
) -> tuple[torch.Tensor, ...] | None:
    """Inputs with other values than ``args`` (and batch size ``batch`` if given) that the module accepts.

    Returns None when the module refuses every candidate (then only the trace inputs are checked).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    for mirror in (True, False):
        candidate = tuple(_other(a, batch, mirror, gen) for a in args)
        try:
            with torch.inference_mode():
                module(*candidate)
        except Exception:  # the module's own checks refuse these values; try the next kind
            continue
        return candidate
    return None


def _other(arg: torch.Tensor, batch: int | None, mirror: bool, gen: torch.Generator) -> torch.Tensor:
    import torch

    shape = list(arg.shape)
    if batch is not None and shape:
        shape[0] = batch
    if arg.dtype.is_floating_point:
        ref = arg.detach().double()
        mean = float(ref.mean()) if ref.numel() else 0.0
        std = float(ref.std()) if ref.numel() > 1 else 1.0
        std = std if std > 0 else max(abs(mean), 1.0)
        if mirror:
            # Around the negated mean: a branch on the sign of a sum or mean goes the other way.
            center = -mean if abs(mean) > 1e-3 * std else -std
            noise = torch.randn(shape, generator=gen, dtype=torch.float64) * std
            return (noise + center).to(arg.dtype)
        scale = 1.0 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
        base = _resize(ref, shape)
        return (base * scale).to(arg.dtype)
    if arg.dtype == torch.bool:
        return torch.rand(shape, generator=gen) < 0.5
    low = int(arg.min()) if arg.numel() else 0
    high = int(arg.max()) + 1 if arg.numel() else 1
    return torch.randint(low, max(high, low + 1), shape, generator=gen, dtype=arg.dtype)


def _resize(t: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """``t`` tiled or cut along axis 0 to ``shape[0]``."""
    import torch

    if not shape or t.shape[0] == shape[0]:
        return t.clone()
    reps = -(-shape[0] // t.shape[0])
    return torch.cat([t] * reps)[: shape[0]]
