"""``python -m zhisuan.bench.children.reliability_crash KIND INDEX``: die by SIGSEGV mid-work.

Started by :func:`zhisuan.bench.reliability.recovery_checks`: queues matrix products on the
device (``KIND`` "cuda" with GPU ``INDEX``, else the CPU), prints ``about to crash`` and kills
itself with SIGSEGV, so the parent can check that the device still serves the next job.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from zhisuan._child import check_argv


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "KIND", "INDEX")
    kind, index = argv[0], int(argv[1])
    import torch

    if kind == "cuda":
        device = torch.device("cuda", index)
        x = torch.randn(4096, 4096, device=device)
        for _ in range(20):
            x = x @ x / 64  # queue work, then die with it in flight
    else:
        x = torch.randn(2048, 2048)
        x = x @ x
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    return 1  # not reached: SIGSEGV ends the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
