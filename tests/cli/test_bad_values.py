"""Every command refuses nonsense values with one ``error:`` line and a non-zero exit, never a traceback.

The bad values come from the commands' own option types (walked from the typer command tree), so
a new option without a declared range fails here: ints get -1, 0 and 10**20, floats -1 and NaN,
paths one under a regular file and one under /proc, choice-like strings a wrong value. A numeric
value inside an option's declared range is legitimate and is not run (it could start real work);
every other one must be refused by the command line itself (exit 2) before anything runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import typer

from zhisuan.cli import app as app_module

HUGE = 10**20
CHOICE_FLAGS = {
    "--runtime", "--ref-runtime", "--cand-runtime", "--scenario", "--precision", "--ref-precision",
    "--cand-precision", "--target", "--mode", "--method", "--exporter", "--ort-level", "--ort-optimization",
    "--engine", "--suite", "--to", "--metric",
}


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):
        return [leaf for name, sub in command.commands.items() for leaf in _leaves(sub, (*path, name))]
    return [(path, command)]


ROOT = typer.main.get_command(app_module.app)
# `serve` itself is the group's callback: its options belong to the group
COMMANDS = [*_leaves(ROOT), (("serve",), ROOT.commands["serve"])]


def _annotation(param: Any) -> Any:
    return param.type_descriptor.annotation


def _base(command: Any, tmp: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Required options and arguments filled with values that reach no model, file or server."""
    options: list[str] = []
    arguments: dict[str, list[str]] = {}
    for p in command.params:
        if not p.required:
            continue
        ann = _annotation(p)
        if p.param_type_name == "argument":
            value = "1" if ann is int else str(tmp / "no-such-model.onnx")
            arguments[p.name] = [value, value] if "list" in str(ann) else [value]
        else:
            options += [p.opts[0], str(tmp / f"out-{p.name}") if ann is Path else "m"]
    return options, arguments


def _inside(param: Any, value: float) -> bool:
    """Whether the option's declared range takes ``value`` (then it is legitimate, not run)."""
    if isinstance(value, float) and math.isnan(value):
        return False
    low = -math.inf if param.min is None else param.min
    high = math.inf if param.max is None else param.max
    return param.min is not None and low <= value <= high


def _cases() -> list[Any]:
    cases = []
    for path, command in COMMANDS:
        for p in command.params:
            ann = _annotation(p)
            name = " ".join(path) + " " + p.opts[0]
            values: list[Any] = []
            if ann is int:
                values = [v for v in (-1, 0, HUGE) if not _inside(p, v)]
            elif ann is float:
                values = [v for v in (-1.0, math.nan) if not _inside(p, v)]
            cases += [pytest.param(path, p.name, v, "usage", id=f"{name}={v}") for v in values]
            if ann is Path:
                cases += [pytest.param(path, p.name, where, "path", id=f"{name}@{where}") for where in ("file", "proc")]
            if ann is str and CHOICE_FLAGS & set(p.opts):
                cases.append(pytest.param(path, p.name, "no-such-choice", "choice", id=f"{name}=bad"))
    return cases


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        app_module.main(argv)
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(("path", "param_name", "value", "kind"), _cases())
def test_bad_value_is_one_line_and_refused(
    path: tuple[str, ...], param_name: str, value: Any, kind: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ZHISUAN_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # a default output (evaluate's zhisuan-report/) lands there
    monkeypatch.setenv("ZHISUAN_CACHE_DIR", str(tmp_path / "cache"))
    command = dict(COMMANDS)[path]
    param = next(p for p in command.params if p.name == param_name)
    options, arguments = _base(command, tmp_path)
    if kind == "path":
        regular = tmp_path / "a-file"
        regular.write_text("not a directory")
        value = str(regular / "x") if value == "file" else "/proc/zhisuan-no-such/x"
    if param.param_type_name == "argument":
        arguments[param_name] = [str(value)]
    elif param.required:
        options = _replace_option(options, param.opts[0], str(value))
    else:
        options += [param.opts[0], str(value)]
    # "--" ends the options: an argument may be "-1"
    argv = [*path, *options, "--", *(v for values in arguments.values() for v in values)]
    code, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code != 0, (argv, err)
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    if kind == "usage":  # refused by the command line itself, naming the option
        assert code == 2, (argv, err)
        assert any(f"'{o}'" in lines[0] for o in param.opts) or f"'{param.name}'" in lines[0], lines[0]


def _replace_option(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def test_every_numeric_option_is_covered() -> None:
    """The generated cases reach every int and float option of every command."""
    numeric = {(path, p.name) for path, c in COMMANDS for p in c.params if _annotation(p) in (int, float)}
    covered = {(c.values[0], c.values[1]) for c in _cases() if c.values[3] == "usage"}
    assert numeric == covered
    assert len(numeric) >= 50
