"""``python -m zhisuan.serve.children.workers_replica FD FD_CHANNEL PACKAGE RUNTIME THREADS``.

One replica of a :class:`zhisuan.serve.workers.ReplicaPool`, started by the pool with two
inherited sockets: ``FD`` carries the pool's messages (:func:`zhisuan.serve.workers.send_message`),
``FD_CHANNEL`` the descriptors of shared-memory buffers. It loads the package at ``PACKAGE`` on
``RUNTIME`` (empty: the package's own) with ``THREADS`` threads (empty: the runtime's default),
says ``ready`` (or ``fatal`` and why), then runs batches until told to stop or the pool is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection

from zhisuan._child import check_argv
from zhisuan.errors import UserError
from zhisuan.serve.workers import SharedBuffer, read_header, read_tensors, send_message


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "FD", "FD_CHANNEL", "PACKAGE", "RUNTIME", "THREADS")
    fd, fd_channel, package_path, runtime, threads = argv
    serve(Connection(int(fd)), socket.socket(fileno=int(fd_channel)), package_path, runtime or None,
          int(threads) if threads else None)
    return 0


def serve(
    conn: Connection, fd_channel: socket.socket, package_path: str, runtime: str | None, threads: int | None
) -> None:
    """Body of a replica process: load the package, then run batches until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when replicas stop
    try:
        from zhisuan.serve.package import load_package

        package = load_package(package_path)
        runner = package.open_runner(runtime=runtime, threads=threads)
    except BaseException as exc:  # report why, then exit: the parent shows it
        with contextlib.suppress(Exception):
            send_message(conn, {"type": "fatal", "message": f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError)
                         else str(exc)})
        return
    send_message(conn, {"type": "ready", "pid": os.getpid(), "info": runner.info.to_dict()})
    shared: SharedBuffer | None = None
    generation = 0
    while True:
        try:
            header = read_header(conn)
        except (EOFError, OSError, ValueError):
            return  # the parent is gone (or speaks nonsense)
        if header.get("type") == "stop":
            return
        job_id = header.get("id")
        try:
            announced = header.get("shm")
            if isinstance(announced, dict) and announced.get("generation", 0) > generation:
                # a bigger shared buffer: its descriptor came just before, on the descriptor channel
                _, fds, _, _ = socket.recv_fds(fd_channel, 1, 1)
                if len(fds) != 1 or not isinstance(announced.get("size"), int):
                    raise ValueError("a shared buffer was announced but no descriptor arrived")
                if shared is not None:
                    shared.close()
                shared, generation = SharedBuffer(announced["size"], fds[0]), int(announced["generation"])
            tensors = read_tensors(conn, header, shared)
        except (EOFError, OSError):
            return
        except ValueError as exc:
            send_message(conn, {"type": "error", "id": job_id, "kind": "internal", "message": f"bad message: {exc}"})
            continue
        try:
            outputs = runner.run(tensors)
        except UserError as exc:
            send_message(conn, {"type": "error", "id": job_id, "kind": "user", "message": str(exc)})
        except Exception as exc:
            send_message(conn, {"type": "error", "id": job_id, "kind": "internal", "message": f"{type(exc).__name__}: {exc}"})
        else:
            send_message(conn, {"type": "result", "id": job_id}, outputs)
        finally:
            del tensors  # views of the shared buffer go before the parent writes the next batch


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
