"""How zhisuan starts Python programs of its own in fresh interpreters.

Each such program is a module in a ``children`` package next to the code that starts it
(``zhisuan/bench/children/``, ``zhisuan/serve/children/``, ``zhisuan/zoo/data/children/``), with
a ``main(argv) -> int`` and ``if __name__ == "__main__": sys.exit(main(sys.argv[1:]))``, run as
``python -m`` with this process's interpreter and import path.

>>> child_command("zhisuan.bench.children.reliability_crash", "cpu", "0")[1:]
['-m', 'zhisuan.bench.children.reliability_crash', 'cpu', '0']
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence


def child_command(module: str, *args: str) -> list[str]:
    """The argv that runs ``module`` with ``args`` in this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) with ``PYTHONPATH`` set to this process's ``sys.path``.

    The child imports the same zhisuan and the same packages as this process, also when this
    process changed ``sys.path`` itself (a test, an application embedding zhisuan) or the child's
    environment would name another ``PYTHONPATH``.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def check_argv(argv: Sequence[str], module: str, *names: str) -> None:
    """Exit with a one-line usage message (status 1) unless ``argv`` has one value per name."""
    if len(argv) != len(names):
        sys.exit(f"usage: python -m {module} {' '.join(names)} (got {len(argv)} arguments, expected {len(names)})")
