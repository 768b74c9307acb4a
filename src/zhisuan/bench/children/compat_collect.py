"""``python -m zhisuan.bench.children.compat_collect OUT``: store onnx's node test cases in ``OUT``.

Started by :func:`zhisuan.bench.compat.case_store` once per onnx version: onnx's generators run
in this process (they import much and warn on purpose), and the cases are written as onnx's
cmd_tools does, plus ``index.json`` (:func:`zhisuan.bench.compat.write_cases`).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from zhisuan._child import check_argv
from zhisuan.bench.compat import write_cases


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "OUT")
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = collect_testcases(None)
    write_cases(cases, Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
