"""``python -m zhisuan.bench.children.security_probe MODE KIND INDEX SIZES WORD ALLOCATORS``.

One memory job of EV-10, started by :func:`zhisuan.bench.security.run_probe` in a fresh process:
``MODE`` "fill" writes the 8-byte pattern ``WORD`` over ``SIZES[0]`` bytes, "scan" allocates
``SIZES[0]`` bytes uninitialised and counts the pattern in them, "same" fills, frees and
reallocates each of the comma-separated ``SIZES`` in this one process. ``KIND`` "cuda" uses GPU
``INDEX`` through torch; on a CPU, ``ALLOCATORS`` "torch" adds ``torch.empty`` to ``numpy.empty``.
Prints one JSON line of pattern-byte counts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np

from zhisuan._child import check_argv
from zhisuan.bench.security import count_pattern_bytes, same_process_reuse


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "MODE", "KIND", "INDEX", "SIZES", "WORD", "ALLOCATORS")
    mode, kind, index, word = argv[0], argv[1], int(argv[2]), int(argv[4])
    sizes = [int(v) for v in argv[3].split(",")]
    use_torch = argv[5] == "torch"
    size = sizes[0]
    out: dict[str, int] = {}
    if kind == "cuda":
        import torch

        dev = torch.device("cuda", index)
        n = size // 8
        if mode == "fill":
            t = torch.empty(n, dtype=torch.int64, device=dev).fill_(word)
            torch.cuda.synchronize(dev)
            out["filled_bytes"] = int((t == word).sum()) * 8
        elif mode == "scan":
            t = torch.empty(n, dtype=torch.int64, device=dev)
            out["torch.empty(cuda)"] = int((t == word).sum()) * 8
        else:
            for size in sizes:
                t = torch.empty(size // 8, dtype=torch.int64, device=dev).fill_(word)
                del t
                t = torch.empty(size // 8, dtype=torch.int64, device=dev)
                out[f"{size}:torch.empty(cuda)"] = int((t == word).sum()) * 8
                del t
    elif mode == "fill":
        a = np.empty(size // 8, dtype=np.uint64)
        a[:] = word
        out["filled_bytes"] = count_pattern_bytes(a, word)
        if use_torch:
            import torch

            t = torch.empty(size // 8, dtype=torch.int64)
            t.fill_(word)
            out["filled_bytes"] += int((t == word).sum()) * 8
    elif mode == "scan":
        out["numpy.empty"] = count_pattern_bytes(np.empty(size, dtype=np.uint8), word)
        if use_torch:
            import torch

            out["torch.empty"] = count_pattern_bytes(torch.empty(size, dtype=torch.uint8).numpy(), word)
    else:
        for size in sizes:
            out[f"{size}:numpy.empty"] = same_process_reuse(lambda n: np.empty(n, dtype=np.uint8), size, word)
            if use_torch:
                import torch

                out[f"{size}:torch.empty"] = same_process_reuse(
                    lambda n: torch.empty(n, dtype=torch.uint8).numpy(), size, word)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
