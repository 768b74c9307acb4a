"""The programs zhisuan runs in fresh interpreters: real modules in ``children`` packages."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import zhisuan
from zhisuan._child import check_argv, child_command, child_env

ROOT = Path(zhisuan.__file__).parent


def _child_modules() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("children/*.py")):
        if path.name != "__init__.py":
            parts = path.relative_to(ROOT.parent).with_suffix("").parts
            found.append(".".join(parts))
    return found


CHILDREN = _child_modules()


def test_every_child_that_the_code_starts_is_found() -> None:
    # one per program that used to be a `python -c` string
    assert len(CHILDREN) == 10, CHILDREN
    assert {m.split(".children.")[0] for m in CHILDREN} == {"zhisuan.bench", "zhisuan.serve", "zhisuan.zoo.data"}


def test_no_source_file_runs_code_from_a_string() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in ROOT.rglob("*.py")
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if '"-c"' in line]
    assert offenders == []


def test_child_modules_import_light_and_have_main() -> None:
    # in a fresh interpreter: importing a child must not pull in the heavy libraries
    code = ("import importlib, json, sys\n"
            f"mods = {CHILDREN!r}\n"
            "ok = all(callable(importlib.import_module(m).main) for m in mods)\n"
            "print(json.dumps([ok, sorted(x for x in ('torch', 'onnxruntime', 'onnx', 'openvino') if x in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                          timeout=120, check=True)
    assert json.loads(done.stdout) == [True, []]


@pytest.mark.parametrize("module", CHILDREN)
def test_a_child_without_arguments_says_how_to_call_it(module: str) -> None:
    done = subprocess.run(child_command(module), capture_output=True, text=True, env=child_env(), timeout=60,
                          check=False)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"usage: python -m {module} "), done.stderr


def test_check_argv_passes_the_right_count_and_exits_otherwise() -> None:
    check_argv(["a", "b"], "m", "A", "B")
    with pytest.raises(SystemExit, match=r"usage: python -m m A B \(got 1 arguments, expected 2\)"):
        check_argv(["a"], "m", "A", "B")


def test_a_child_imports_from_this_process_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "only_here.py").write_text("import sys\nprint('found', sys.argv[1:])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/nowhere"}  # the environment names another path
    done = subprocess.run(child_command("only_here", "x"), capture_output=True, text=True, env=child_env(base),
                          timeout=60, check=True)
    assert done.stdout.strip() == "found ['x']"
    assert child_env(base)["PATH"] == "/usr/bin:/bin"


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_child_modules_are_ruff_clean() -> None:
    files = [str(p) for p in sorted(ROOT.rglob("children/*.py"))] + [str(ROOT / "_child.py")]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *files], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
