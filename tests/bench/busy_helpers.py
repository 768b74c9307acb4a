"""Another job on the machine, for the interference tests: busy loops outside our process tree."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# A busy loop on every core we may use, started as a daemon (double fork, new session) so that it
# is not in our process tree: another job on the machine.
_FOREIGN_BUSY = """
import os, sys, time
if os.fork():
    sys.exit(0)
os.setsid()
cpus = sorted(os.sched_getaffinity(0))
for cpu in cpus[1:]:
    if os.fork() == 0:
        cpus = [cpu]
        break
else:
    cpus = cpus[:1]
os.sched_setaffinity(0, set(cpus))
with open(sys.argv[2], "a") as f:
    f.write("%d\\n" % os.getpid())
deadline = time.time() + float(sys.argv[1])
while time.time() < deadline:
    pass
"""


def start_foreign_busy(seconds: float, pid_file: Path) -> list[int]:
    subprocess.run([sys.executable, "-c", _FOREIGN_BUSY, str(seconds), str(pid_file)], check=True, timeout=10,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []
        if len(pids) == len(os.sched_getaffinity(0)):
            return pids
        time.sleep(0.05)  # the forked loops write their pid once they run
    return pids


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@contextlib.contextmanager
def foreign_busy(seconds: float, pid_file: Path) -> Iterator[list[int]]:
    """Busy loops on every core we may use for at most ``seconds``, killed on exit."""
    pids = start_foreign_busy(seconds, pid_file)
    try:
        time.sleep(0.2)
        yield pids
    finally:
        kill(pids)
