"""``python -m zhisuan.bench.children.training_ddp_rank SPEC``: one rank of the EV-6 DDP run.

Started by :func:`zhisuan.bench.training.run_ddp` with ``SPEC``, the run's JSON (its
:class:`~zhisuan.bench.training.DdpConfig` plus ``rank``, the ``store`` file, the ``data`` file
and the ``result`` path). The ranks meet in a FileStore; rank 0 writes the result atomically.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zhisuan._child import check_argv
from zhisuan._io import atomic_write_json
from zhisuan.bench.training import LEARNING_RATE, build_model, sync_device


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "SPEC")
    import datetime

    import torch
    import torch.distributed as dist
    from torch.nn import functional
    from torch.nn.parallel import DistributedDataParallel

    spec = json.loads(argv[0])
    rank, world = int(spec["rank"]), int(spec["world_size"])
    torch.set_num_threads(int(spec["threads_per_process"]))
    if spec["device_kind"] == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(spec["backend"], init_method=Path(spec["store"]).absolute().as_uri(), rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=float(spec["timeout_s"])))
    try:
        with np.load(spec["data"], allow_pickle=False) as arrays:
            x = torch.from_numpy(arrays["x"]).to(device)
            y = torch.from_numpy(arrays["y"]).to(device)
        torch.manual_seed(int(spec["seed"]))  # the same initial weights on every rank
        model = build_model().to(device)
        ddp = DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=LEARNING_RATE)
        batch, steps, windows, warmup = (int(spec[k]) for k in ("batch", "steps_per_window", "windows", "warmup_steps"))
        picks = torch.Generator().manual_seed(int(spec["seed"]) * 1000 + rank)  # each rank its own samples
        batches = torch.randint(0, len(y), (warmup + steps * windows, batch), generator=picks).to(device)

        def step(i: int) -> None:
            idx = batches[i]
            optimizer.zero_grad(set_to_none=True)
            functional.cross_entropy(ddp(x[idx]), y[idx]).backward()  # backward all-reduces the gradients
            optimizer.step()

        for i in range(warmup):
            step(i)
        sync_device(device)
        dist.barrier()
        rates, timed = [], 0.0
        i = warmup
        for _ in range(windows):
            t0 = time.perf_counter()
            for _ in range(steps):
                step(i)
                i += 1
            sync_device(device)
            dist.barrier()  # the window ends when the slowest rank is done
            elapsed = time.perf_counter() - t0
            timed += elapsed
            rates.append(world * steps * batch / elapsed)
        totals = [None] * world
        dist.all_gather_object(totals, timed)
        if rank == 0:
            atomic_write_json(spec["result"], {"samples_per_s": rates, "per_rank_s": totals})
        dist.barrier()  # no rank tears its connections down while another is still in a collective
        Path(spec["done"]).touch()  # measured: a crash in the teardown below no longer loses the run
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
