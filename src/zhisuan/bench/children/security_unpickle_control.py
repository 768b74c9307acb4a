"""``python -m zhisuan.bench.children.security_unpickle_control FILE``: unpickle ``FILE``, on purpose.

The control of EV-10's no-unpickling check, started by
:func:`zhisuan.bench.security.unpickle_check`: the payload file really runs code when it is
unpickled (it writes a marker file), which proves that zhisuan's loaders, which create no
marker, refused it rather than missed it. Nothing else in zhisuan unpickles a file.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Sequence

from zhisuan._child import check_argv


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "FILE")
    with open(argv[0], "rb") as fh:
        pickle.load(fh)  # the point of this control: the file runs code when unpickled
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
