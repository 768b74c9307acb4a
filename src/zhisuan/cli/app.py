"""The ``zhisuan`` command. Each sub-command lives in its own thin module under ``zhisuan.cli``.

Nothing heavy is imported here: torch, onnxruntime and openvino load only inside the command
that needs them, so ``zhisuan --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer

from zhisuan import __version__
from zhisuan import cli as _cli_pkg
from zhisuan.errors import UserError

app = typer.Typer(
    name="zhisuan",
    help=(
        "智算 zhisuan — deploy AI models onto accelerators and evaluate those accelerators.\n\n"
        "Example:  zhisuan doctor"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"zhisuan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """智算 zhisuan — deploy AI models onto accelerators and evaluate those accelerators."""


# Each command module in zhisuan/cli defines ``register(app)``; modules starting with "_" are helpers.
_ORDER = [
    "evaluate", "doctor", "device", "runtime", "zoo", "convert", "optimize", "quantize", "compare", "profile",
    "bench", "report", "pack", "repo", "serve", "rollout",
]
_modules = [m.name for m in pkgutil.iter_modules(_cli_pkg.__path__) if not m.name.startswith("_") and m.name != "app"]
for _name in sorted(_modules, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    importlib.import_module(f"{_cli_pkg.__name__}.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line and exit 1, bugs one line and exit 3."""
    debug = os.environ.get("ZHISUAN_DEBUG") == "1"
    try:
        app(args=argv, prog_name="zhisuan")
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: one line, not a traceback, unless debugging
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"internal error: {type(exc).__name__}: {first} (set ZHISUAN_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
