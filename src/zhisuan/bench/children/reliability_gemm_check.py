"""``python -m zhisuan.bench.children.reliability_gemm_check KIND INDEX``: a fresh process's GEMM.

Started by :func:`zhisuan.bench.reliability.recovery_checks` after a child crashed on the device:
one seeded 512x512 FP32 matrix product on the device (``KIND`` "cuda" with GPU ``INDEX``, else
the CPU), compared with a float64 reference under the rounding bound ``514 u |A||B|``. Prints one
JSON line: ``{"beyond_bound": elements, "max_abs_error": float}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np

from zhisuan._child import check_argv


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "KIND", "INDEX")
    kind, index = argv[0], int(argv[1])
    import torch

    device = torch.device("cuda", index) if kind == "cuda" else torch.device("cpu")
    torch.set_float32_matmul_precision("highest")
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (512, 512)).astype(np.float32)
    b = rng.uniform(-1, 1, (512, 512)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    bound = 514 * 2.0**-24 * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    c = (torch.from_numpy(a).to(device) @ torch.from_numpy(b).to(device)).cpu().numpy().astype(np.float64)
    print(json.dumps({"beyond_bound": int((~(np.abs(c - ref) <= bound)).sum()),
                      "max_abs_error": float(np.abs(c - ref).max())}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
