"""The CLI as a user meets it: fast help, one-line errors, examples everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import typer

from zhisuan import __version__
from zhisuan.cli import app as app_module

HEAVY = ("torch", "onnxruntime", "openvino", "onnx", "tensorrt", "pynvml")


def _zhisuan(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from zhisuan.cli.app import app, main\n"
        "import typer\n"
        "root = typer.main.get_command(app)\n"
        "paths = [[]] + [[n] for n in root.commands]\n"
        "paths += [[n, s] for n, c in root.commands.items() if hasattr(c, 'commands') for s in c.commands]\n"
        "for path in paths:\n"
        "    args = path + ['--help']\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="  # no heavy module was imported


def test_version() -> None:
    proc = _zhisuan("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"zhisuan {__version__}"


def _leaf_commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):  # a group (typer may vendor its own click)
        found = []
        for name, sub in command.commands.items():
            found += _leaf_commands(sub, (*path, name))
        return found
    return [(path, command)]


def test_every_command_has_an_example_and_json_where_scripts_need_it() -> None:
    root = typer.main.get_command(app_module.app)
    leaves = _leaf_commands(root)
    assert len(leaves) >= 8
    for path, command in leaves:
        assert "Example:" in (command.help or ""), f"`zhisuan {' '.join(path)}` has no example in its help"
        assert any("--json" in p.opts for p in command.params), f"`zhisuan {' '.join(path)}` has no --json"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zoo", "show", "no-such-model"], "unknown zoo model"),
        (["zoo", "eval", "no-such-model", "--json"], "unknown zoo model"),
        (["doctor", "--only", "no-such-check"], "unknown check"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(args: list[str], message: str) -> None:
    proc = _zhisuan(*args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_internal_errors_are_one_line_and_exit_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise KeyError("invariant broken")

    monkeypatch.setattr("zhisuan.runtime.backend_status", boom)
    with pytest.raises(SystemExit) as exc:
        app_module.main(["runtime", "list"])
    assert exc.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["internal error: KeyError: 'invariant broken' (set ZHISUAN_DEBUG=1 for a traceback)"]


def test_runtime_list_json() -> None:
    proc = _zhisuan("runtime", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    statuses = {s["name"]: s for s in json.loads(proc.stdout)}
    assert statuses["onnxruntime"]["available"] is True
    assert "cpu" in statuses["onnxruntime"]["devices"]
    for status in statuses.values():  # an unavailable backend says why and how to install it
        if not status["available"]:
            assert status["reason"] and status["install_hint"]
