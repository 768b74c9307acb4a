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
from zhisuan.errors import UsageError, UserError

# One rule for every command (README "Exit status" has the same table).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_STATUSES = (
    (EXIT_OK, "success (a check passed)"),
    (EXIT_FAILED, "a user error found while working (a missing or unreadable file, an unknown model, an "
                  "unavailable backend, an unreachable server) or a check that failed (compare outside "
                  "tolerance, a failed evaluate item or doctor check)"),
    (EXIT_USAGE, "usage error: the command line itself is wrong (an unknown option, a missing argument, a "
                 "value of the wrong type, out of range or not one of the choices); nothing ran"),
    (EXIT_INTERNAL, "internal error: a bug in zhisuan (ZHISUAN_DEBUG=1 shows the traceback)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

app = typer.Typer(
    name="zhisuan",
    help=(
        "智算 zhisuan — deploy AI models onto accelerators and evaluate those accelerators.\n\n"
        "Example:  zhisuan doctor"
    ),
    epilog="Exit status: " + "; ".join(f"{code} {what.split(':')[0].split(' (')[0]}" for code, what in EXIT_STATUSES)
    + ". Errors print one line on stderr.",
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
    "bench", "report", "pack", "repo", "serve", "rollout", "apps",
]
_modules = [m.name for m in pkgutil.iter_modules(_cli_pkg.__path__) if not m.name.startswith("_") and m.name != "app"]
for _name in sorted(_modules, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    importlib.import_module(f"{_cli_pkg.__name__}.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr with the exit status of
    :data:`EXIT_STATUSES` (user error 1, usage error 2, bug 3)."""
    from typer._click import exceptions as click_exceptions  # typer vendors its click

    debug = os.environ.get("ZHISUAN_DEBUG") == "1"
    try:
        code = app(args=argv, prog_name="zhisuan", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # `zhisuan repo`: the help, as typer shows it
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(EXIT_USAGE)
    except click_exceptions.ClickException as exc:  # the command line did not parse
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "zhisuan"
        message = " ".join(exc.format_message().split())
        print(f"error: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:
        if debug or exc.filename is None:
            _internal(exc, debug)
        # A path the user named (or the cache, a log directory) cannot be read or written: the
        # user can fix that (permissions, a file where a directory should be, /proc).
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        _internal(exc, debug)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _internal(exc: BaseException, debug: bool) -> None:
    """A bug: one line, not a traceback, unless debugging."""
    if debug:
        raise exc
    first = str(exc).splitlines()[0] if str(exc) else ""
    print(f"internal error: {type(exc).__name__}: {first} (set ZHISUAN_DEBUG=1 for a traceback)", file=sys.stderr)
    sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
