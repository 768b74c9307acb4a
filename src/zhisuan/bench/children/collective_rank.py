"""``python -m zhisuan.bench.children.collective_rank CONFIG RANK``: one rank of the EV-4 sweep.

Started by :func:`zhisuan.bench.collective.run_collectives`: joins the process group named in the
JSON file ``CONFIG``, times every collective and size, and writes ``rank<RANK>.json`` next to it.
Exit status 2 when NCCL cannot have one GPU per rank.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zhisuan._child import check_argv
from zhisuan._io import atomic_write_json
from zhisuan.bench.collective import iterations_for


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "CONFIG", "RANK")
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    config = json.loads(Path(argv[0]).read_text())
    rank, world = int(argv[1]), int(config["world_size"])
    backend = config["backend"]
    out_dir = Path(config["out_dir"])
    torch.set_num_threads(int(config["threads"]))
    if backend == "nccl":
        if torch.cuda.device_count() <= rank:
            print(f"rank {rank}: NCCL needs one GPU per rank, and torch sees {torch.cuda.device_count()} "
                  f"(CUDA available: {torch.cuda.is_available()})", file=sys.stderr)
            return 2
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)

        def sync() -> None:
            torch.cuda.synchronize(device)
    else:
        device = torch.device("cpu")

        def sync() -> None:
            pass

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{config['port']}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=float(config["timeout_s"])))
    times: dict[str, list[float]] = {}
    try:
        for collective in config["collectives"]:
            for size in config["sizes"]:
                if rank == 0:
                    atomic_write_json(out_dir / "rank0.progress", f"{collective} {size} bytes")
                step = _collective_step(dist, collective, size, world, device)
                iters = iterations_for(size, target_bytes=int(config["target_bytes"]),
                                       low=int(config["min_iters"]), high=int(config["max_iters"]))
                for _ in range(int(config["warmup"])):
                    step()
                sync()
                dist.barrier()
                samples = []
                for _ in range(iters):
                    t0 = time.perf_counter()
                    step()
                    sync()
                    samples.append(time.perf_counter() - t0)
                times[f"{collective}:{size}"] = samples
        dist.barrier()
    finally:
        dist.destroy_process_group()
    atomic_write_json(out_dir / f"rank{rank}.json",
                      {"rank": rank, "times": times, "torch": torch.__version__, "device": str(device)})
    return 0


def _collective_step(dist: Any, collective: str, size: int, world: int, device: Any) -> Callable[[], Any]:
    import torch

    if collective == "all_reduce":
        buf = torch.ones(size // 4, dtype=torch.float32, device=device)
        return lambda: dist.all_reduce(buf)
    per_rank = size // 4 // world
    send = torch.ones(per_rank, dtype=torch.float32, device=device)
    out = torch.empty(per_rank * world, dtype=torch.float32, device=device)
    return lambda: dist.all_gather_into_tensor(out, send)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
