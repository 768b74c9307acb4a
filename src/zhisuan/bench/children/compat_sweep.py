"""``python -m zhisuan.bench.children.compat_sweep SPEC``: run conformance cases on one backend.

Started (and restarted after a crash or a hang) by :class:`zhisuan.bench.compat.BackendSweep`.
``SPEC`` is JSON: ``backend``, the case ``store``, the ``cases`` to run, the ``results`` file,
``threads`` and ``device``. Per case it appends ``{"start": name}`` and then the case's result
to the results file, one flushed JSON line each, so the parent knows which case a crash hit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from zhisuan._child import check_argv
from zhisuan.bench.compat import PREPARERS, Prepared, is_random, load_case, read_index, run_case


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "SPEC")
    spec = json.loads(argv[0])
    store = Path(spec["store"])
    infos = {c.name: c for c in read_index(store)}
    preparer = PREPARERS[spec["backend"]]
    threads, device = int(spec.get("threads", 1)), str(spec.get("device", "cpu"))

    def prepare(model_bytes: bytes) -> Prepared:
        return preparer(model_bytes, threads=threads, device=device)

    with open(spec["results"], "a", encoding="utf-8") as out:
        for name in spec["cases"]:
            out.write(json.dumps({"start": name}) + "\n")
            out.flush()
            info = infos[name]
            model_bytes, sets = load_case(store, name)
            result = run_case(prepare, name, model_bytes, sets, rtol=info.rtol, atol=info.atol,
                              values=not is_random(info))
            out.write(json.dumps(result.to_dict()) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
