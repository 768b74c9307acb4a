"""EV-6 training: time to a target accuracy on a real data set, samples/s, MFU and DDP scaling.

The workload is real and small enough for any device: a two-convolution CNN trained with Adam on
scikit-learn's handwritten digits (1,797 8x8 images shipped inside scikit-learn, no download),
split once, stratified and seeded, into 1,347 training and 450 test images.

- **Time to train** follows the MLPerf Training rule: the clock starts before the data is touched
  (loading the data set is inside the window) and stops when the test accuracy, evaluated after
  every epoch, first reaches the target (0.95); evaluation time counts. Each run uses another
  seed for the weights and the batch order; the score drops the fastest and slowest run when
  there are at least three and averages the rest (quick: 1 run, standard: 3, full: 5).
- **Samples/s** is steady-state training throughput (forward, backward, optimizer step) after a
  warm-up, timed in windows of whole steps; the spread is over windows.
- **MFU** (model FLOPs utilisation) = 3 x forward FLOPs per sample x samples/s / the device's
  theoretical FP32 peak. Forward FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``
  (multiply and add counted as two FLOPs); 3x is the usual convention (backward = 2x forward).
- **Scaling efficiency** 1 -> N processes with ``DistributedDataParallel`` (gloo on CPUs, NCCL on
  GPUs) is weak scaling: every process keeps the same per-process batch, so
  ``efficiency = throughput_N / (N x throughput_1)``. On a CPU one "device" is a share of the
  cores: each process gets ``threads // N`` threads, in the 1-process run too, so that 1.0 is the
  ideal. Processes are started with a deadline and killed if they overrun.

>>> from zhisuan.bench.training import scaling_efficiency
>>> scaling_efficiency([1000.0], [1900.0], 2)
0.95
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan._child import child_command, child_env
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.errors import BackendUnavailableError, InternalError, UserError
from zhisuan.results import Record

_log = logging.getLogger(__name__)

CLAUSE = "EV-6"
TARGET_ACCURACY = 0.95
BATCH = 32  # per process
LEARNING_RATE = 1e-3
MAX_EPOCHS = 40
TEST_FRACTION = 0.25
DATASET = "scikit-learn digits (1,797 8x8 grey images, 10 classes)"


# ---------------------------------------------------------------------------------------------
# data and model


@dataclass(frozen=True)
class DigitsSplit:
    """Training and test arrays: images ``float32 [N, 1, 8, 8]`` in [0, 1], labels ``int64 [N]``."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    seed: int

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.y_train), len(self.y_test)


def load_digits_split(seed: int = 0) -> DigitsSplit:
    """scikit-learn's digits, split 75/25, stratified by class, with ``random_state=seed``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise BackendUnavailableError("scikit-learn", f"cannot import it ({exc})", "pip install scikit-learn") from None
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed
    )
    return DigitsSplit(x_train, y_train, x_test, y_test, seed)


def build_model() -> Any:
    """Conv(1->32) ReLU Conv(32->64) ReLU MaxPool Linear(1024->128) ReLU Linear(128->10)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


@dataclass(frozen=True)
class ModelFlops(Record):
    """FLOPs per sample counted by ``FlopCounterMode`` (multiply and add = 2 FLOPs)."""

    forward: int
    forward_backward_counted: int  # one real training step, counted, per sample

    @property
    def training(self) -> int:
        """The conventional 3 x forward used for MFU."""
        return 3 * self.forward

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "training_3x_forward": self.training}


def count_flops(model: Any, device: Any, batch: int = 8) -> ModelFlops:
    import torch
    from torch.nn import functional
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, 1, 8, 8, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return ModelFlops(forward // batch, counter.get_total_flops() // batch)


def torch_device(device: Any) -> Any:
    """The torch device for a :class:`~zhisuan.device.base.DeviceInfo` (``cpu`` or ``cuda:N``)."""
    import torch

    kind = getattr(device, "kind", "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError("torch cuda", "torch.cuda.is_available() is False", "install a CUDA build of torch")
        return torch.device("cuda", int(getattr(device, "index", 0)))
    raise UserError(f"EV-6 trains with torch on cpu or cuda devices, not {kind!r}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the block, then restore them."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync_device(device: Any) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# time to train


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    elapsed_s: float  # since the clock started (before the data was loaded)
    train_loss: float  # mean over the epoch's batches
    test_accuracy: float


@dataclass(frozen=True)
class TimeToTrain(Record):
    """One MLPerf-style run: ``seconds`` is None when the target was not reached."""

    seconds: float | None
    target: float
    epochs: int
    seed: int
    train_samples: int
    train_s: float  # time inside training steps only (no data loading, no evaluation)
    curve: tuple[EpochPoint, ...]

    @property
    def reached(self) -> bool:
        return self.seconds is not None

    @property
    def samples_per_s(self) -> float:
        return self.train_samples / self.train_s if self.train_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reached": self.reached, "samples_per_s": self.samples_per_s}


def time_to_train(
    *,
    device: Any,
    seed: int,
    split_seed: int = 0,
    target: float = TARGET_ACCURACY,
    max_epochs: int = MAX_EPOCHS,
    batch: int = BATCH,
    lr: float = LEARNING_RATE,
    clock: Callable[[], float] = time.perf_counter,
    on_epoch: Callable[[EpochPoint], None] | None = None,
) -> TimeToTrain:
    """Train from scratch until the test accuracy reaches ``target`` (or ``max_epochs`` pass)."""
    import torch
    from torch.nn import functional

    if not 0 < target <= 1:
        raise UserError(f"the target accuracy must be in (0, 1], got {target}")
    start = clock()  # MLPerf: before the data is touched
    data = load_digits_split(split_seed)
    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device)
    x_test = torch.from_numpy(data.x_test).to(device)
    y_test = torch.from_numpy(data.y_test).to(device)
    torch.manual_seed(seed)
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    curve: list[EpochPoint] = []
    train_s, samples = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(len(y_train), generator=order).to(device)
        t0 = clock()
        losses = torch.zeros((), device=device)
        steps = 0
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            losses += loss.detach()
            steps += 1
        sync_device(device)
        train_s += clock() - t0
        samples += len(perm)
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        point = EpochPoint(epoch, clock() - start, float(losses) / steps, accuracy)
        curve.append(point)
        if on_epoch is not None:
            on_epoch(point)
        if accuracy >= target:
            return TimeToTrain(point.elapsed_s, target, epoch, seed, samples, train_s, tuple(curve))
    return TimeToTrain(None, target, max_epochs, seed, samples, train_s, tuple(curve))


def warm_up(device: Any) -> None:
    """Import the data libraries and run one training step on zeros, before any clock starts.

    MLPerf leaves system initialisation outside the timed run; without this the first run would
    also time importing scikit-learn and the first-call setup of the framework's kernels.
    """
    import torch
    from torch.nn import functional

    load_digits_split(0)
    model = build_model().to(device)
    x = torch.zeros(BATCH, 1, 8, 8, device=device)
    y = torch.zeros(BATCH, dtype=torch.long, device=device)
    functional.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        model.eval()(x)
    sync_device(device)


def mlperf_score(seconds: Sequence[float]) -> float:
    """MLPerf Training's aggregate: drop the fastest and slowest run (with >= 3 runs), mean of the rest.

    >>> mlperf_score([3.0, 1.0, 2.0, 10.0, 2.5])
    2.5
    """
    values = sorted(float(s) for s in seconds)
    if not values:
        raise UserError("no run reached the target")
    if len(values) >= 3:
        values = values[1:-1]
    return statistics.fmean(values)


# ---------------------------------------------------------------------------------------------
# steady-state throughput


def training_throughput(
    *,
    device: Any,
    seed: int = 0,
    batch: int = BATCH,
    steps_per_window: int = 20,
    windows: int = 5,
    warmup_steps: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Samples/s of each window of ``steps_per_window`` full training steps, after a warm-up."""
    import torch
    from torch.nn import functional

    data = load_digits_split(0)
    x = torch.from_numpy(data.x_train).to(device)
    y = torch.from_numpy(data.y_train).to(device)
    torch.manual_seed(seed)
    model = build_model().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    picks = torch.Generator().manual_seed(seed)
    total = warmup_steps + windows * steps_per_window
    batches = torch.randint(0, len(y), (total, batch), generator=picks).to(device)

    def step(i: int) -> None:
        idx = batches[i]
        optimizer.zero_grad(set_to_none=True)
        functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()

    for i in range(warmup_steps):
        step(i)
    sync_device(device)
    rates = []
    i = warmup_steps
    for _ in range(windows):
        t0 = clock()
        for _ in range(steps_per_window):
            step(i)
            i += 1
        sync_device(device)
        rates.append(steps_per_window * batch / (clock() - t0))
    return rates


# ---------------------------------------------------------------------------------------------
# peak for MFU


@dataclass(frozen=True)
class Peak:
    flops: float | None  # FLOP/s
    source: str
    reason: str | None = None


def fp32_peak(device: Any, cores: int | None = None) -> Peak:
    """The theoretical FP32 peak from EV-2's :func:`zhisuan.device.peak.theoretical_peak`.

    ``cores`` limits a CPU peak to the cores the measurement used.
    """
    from zhisuan.device.peak import theoretical_peak

    estimate = theoretical_peak(device, "fp32", cores=cores if getattr(device, "kind", "") == "cpu" else None)
    if estimate.ops_per_s is None:
        return Peak(None, "", estimate.reason or "no theoretical FP32 peak is known for this device")
    return Peak(float(estimate.ops_per_s), f"theoretical FP32 peak {estimate.formula}")


# ---------------------------------------------------------------------------------------------
# DDP scaling


def scaling_efficiency(throughput_1: Sequence[float], throughput_n: Sequence[float], n: int) -> float:
    """Weak-scaling efficiency ``median(throughput_N) / (N x median(throughput_1))``."""
    if n < 1:
        raise UserError(f"the number of processes must be at least 1, got {n}")
    if not throughput_1 or not throughput_n:
        raise UserError("scaling efficiency needs throughputs of both runs")
    one = statistics.median(throughput_1)
    if one <= 0:
        raise UserError("the 1-process throughput must be positive")
    return statistics.median(throughput_n) / (n * one)


@dataclass(frozen=True)
class DdpConfig(Record):
    world_size: int
    backend: str  # "gloo" or "nccl"
    device_kind: str  # "cpu" or "cuda"
    threads_per_process: int
    batch: int = BATCH
    steps_per_window: int = 20
    windows: int = 5
    warmup_steps: int = 10
    seed: int = 0
    timeout_s: float = 180.0


@dataclass(frozen=True)
class DdpRun(Record):
    config: DdpConfig
    samples_per_s: tuple[float, ...]  # per window, all processes together
    wall_s: float  # process start to exit
    per_rank_s: tuple[float, ...] = field(default=())  # each rank's total timed seconds


_RANK = "zhisuan.bench.children.training_ddp_rank"  # one worker process per rank


def run_ddp(config: DdpConfig, work_dir: Path) -> DdpRun:
    """Start ``world_size`` worker processes, wait up to ``timeout_s``, kill them all if they overrun."""
    if config.world_size < 1:
        raise UserError(f"world_size must be >= 1, got {config.world_size}")
    work_dir.mkdir(parents=True, exist_ok=True)
    # absolute: the workers' FileStore URL must not depend on their working directory
    scratch = Path(tempfile.mkdtemp(prefix=f"ddp{config.world_size}-", dir=work_dir)).resolve()
    store = scratch / "store"  # torch.distributed FileStore: no TCP port to pick or race for
    result_path = scratch / "result.json"
    data_path = scratch / "train.npz"  # the workers read the split, so they need not import scikit-learn
    split = load_digits_split(0)
    np.savez(data_path, x=split.x_train, y=split.y_train)
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(config.threads_per_process),
                "MKL_NUM_THREADS": str(config.threads_per_process)})
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    t0 = time.monotonic()
    try:
        for rank in range(config.world_size):
            spec = {**config.to_dict(), "rank": rank, "store": str(store), "result": str(result_path),
                    "data": str(data_path), "done": str(scratch / f"rank{rank}.done")}
            log = scratch / f"rank{rank}.log"
            with open(log, "wb") as fh:
                proc = subprocess.Popen(child_command(_RANK, json.dumps(spec)), stdout=fh,
                                        stderr=subprocess.STDOUT, env=child_env(env))
            procs.append((proc, log))
        deadline = t0 + config.timeout_s

        def failures() -> list[tuple[int, int, Path]]:
            # a rank that passed the final barrier (its done marker exists) has measured everything; gloo
            # can still abort in its own teardown ("terminate called without an active exception", a
            # known torch.distributed race at exit), which must not throw the measurement away
            return [(i, p.returncode, log) for i, (p, log) in enumerate(procs)
                    if p.returncode not in (None, 0) and not (scratch / f"rank{i}.done").is_file()]

        while any(proc.poll() is None for proc, _ in procs):
            if failures():  # one rank that dies leaves the others waiting in a collective: stop them all
                break
            if time.monotonic() > deadline:
                raise UserError(
                    f"DDP with {config.world_size} process(es) did not finish within {config.timeout_s:.0f} s; "
                    "the processes were killed"
                )
            time.sleep(0.05)
        wall = time.monotonic() - t0
        failed = failures()
        if failed:
            rank, code, log = failed[0]
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            why = " | ".join(ln[:200] for ln in lines[-3:]) or "(no output)"
            raise UserError(f"DDP rank {rank} of {config.world_size} exited with status {code}: {why}")
        for i, (proc, _) in enumerate(procs):
            if proc.returncode != 0:
                _log.warning("DDP rank %d exited with status %d after its last collective (a teardown crash "
                             "in torch.distributed); its measurements are complete", i, proc.returncode)
        if not result_path.is_file():
            raise InternalError("the DDP workers exited cleanly but wrote no result")
        result = json.loads(result_path.read_text(encoding="utf-8"))
        return DdpRun(config, tuple(result["samples_per_s"]), wall, tuple(result["per_rank_s"]))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# tasks


def _series(curve: Sequence[EpochPoint]) -> list[dict[str, Any]]:
    epochs = [p.epoch for p in curve]
    return [
        {"x": epochs, "y": [p.train_loss for p in curve], "x_label": "epoch",
         "y_label": "training loss / test accuracy", "label": "training loss (cross-entropy)"},
        {"x": epochs, "y": [p.test_accuracy for p in curve], "x_label": "epoch",
         "y_label": "test accuracy", "label": "test accuracy"},
    ]


@task("EV-6.train", clause=CLAUSE, title="Training: time to target accuracy, samples/s, MFU",
      est_s={"quick": 20, "standard": 45, "full": 90}, device_kinds=("cpu", "cuda"))
def measure_training(ctx: EvalContext) -> list[Item]:
    """Training on digits: time to 0.95 test accuracy, samples/s and MFU."""
    from zhisuan.bench.energy import energy_items, energy_window

    device = torch_device(ctx.device)
    runs_n = ctx.pick(quick=1, standard=3, full=5)
    windows = ctx.pick(quick=5, standard=10, full=20)
    steps_total = runs_n + 2
    items: list[Item] = []
    with torch_threads(ctx.threads if device.type == "cpu" else None):
        warm_up(device)
        runs = []
        for r in range(runs_n):
            ctx.progress(f"time to {TARGET_ACCURACY:.2f} accuracy, run {r + 1}/{runs_n}", done=r, total=steps_total)
            runs.append(time_to_train(device=device, seed=ctx.seed + r, split_seed=ctx.seed))
        reached = [run.seconds for run in runs if run.seconds is not None]
        method = (f"MLPerf Training rule: wall clock from before loading {DATASET} to the first epoch whose "
                  f"test accuracy (450 held-out images, evaluated every epoch, evaluation time included) "
                  f"reaches {TARGET_ACCURACY} (libraries imported and one step warmed up before); "
                  f"CNN (2 conv + 2 linear), Adam lr {LEARNING_RATE}, batch {BATCH}, "
                  f"seeds {ctx.seed}..{ctx.seed + runs_n - 1} for weights and batch order; "
                  + ("mean after dropping the fastest and slowest run" if runs_n >= 3 else "a single run")
                  + (f"; {ctx.threads} threads" if device.type == "cpu" else "") + f" on {device}")
        details = {"runs": [run.to_dict() for run in runs], "series": _series(runs[0].curve),
                   "higher_is_better": False, "target_accuracy": TARGET_ACCURACY,
                   "train_test_sizes": list(load_digits_split(ctx.seed).sizes), "max_epochs": MAX_EPOCHS}
        if len(reached) < len(runs):
            items.append(Item.failed(
                "EV-6.time_to_train", CLAUSE, f"Time to {TARGET_ACCURACY} test accuracy (digits CNN)",
                reason=f"{len(runs) - len(reached)} of {len(runs)} run(s) did not reach {TARGET_ACCURACY} "
                       f"within {MAX_EPOCHS} epochs (best {max(p.test_accuracy for r in runs for p in r.curve):.3f})",
                unit="s", method=method, details={**details, "timed": False}))
        else:
            items.append(Item.measured(
                "EV-6.time_to_train", CLAUSE, f"Time to {TARGET_ACCURACY} test accuracy (digits CNN)",
                value=mlperf_score(reached), unit="s", method=method, samples=reached, details=details))

        ctx.progress("steady-state training throughput", done=runs_n, total=steps_total)
        flops = count_flops(build_model().to(device), device)
        with energy_window(ctx) as window:
            rates = training_throughput(device=device, seed=ctx.seed, windows=windows)
        rate = statistics.median(rates)
        items.append(Item.measured(
            "EV-6.samples_per_s", CLAUSE, "Training throughput (digits CNN)", value=rate, unit="samples/s",
            method=f"steady state after 10 warm-up steps: {windows} windows of 20 steps (forward, backward, "
                   f"Adam step) at batch {BATCH} on {device}; median of windows",
            samples=rates, details={"batch": BATCH, "flops_per_sample": flops.to_dict(),
                                    "in_run_samples_per_s": [run.samples_per_s for run in runs]}))
        items += energy_items("EV-7.training", rate, "samples/s", window.reading)

        ctx.progress("model FLOPs utilisation", done=runs_n + 1, total=steps_total)
        peak = fp32_peak(ctx.device, cores=ctx.threads)
        mfu_method = ("MFU = 3 x forward FLOPs per sample (FlopCounterMode: "
                      f"{flops.forward:,} FLOPs; one counted forward+backward step: {flops.forward_backward_counted:,}) "
                      "x samples/s / theoretical FP32 peak")
        if peak.flops is None:
            items.append(Item.skipped("EV-6.mfu", CLAUSE, "Model FLOPs utilisation (training)", unit="%",
                                      method=mfu_method, reason=f"no theoretical FP32 peak: {peak.reason}"))
        else:
            samples = [100.0 * flops.training * r / peak.flops for r in rates]
            items.append(Item.measured(
                "EV-6.mfu", CLAUSE, "Model FLOPs utilisation (training)", value=statistics.median(samples),
                unit="%", method=mfu_method + f" ({peak.flops / 1e9:,.1f} GFLOP/s, {peak.source})",
                samples=samples,
                details={"achieved_gflops": flops.training * rate / 1e9, "peak_gflops": peak.flops / 1e9,
                         "peak_source": peak.source, "flops_per_sample": flops.to_dict()}))
    ctx.progress("done", done=steps_total, total=steps_total)
    return items


@task("EV-6.scaling", clause=CLAUSE, title="Training: 1 -> N process scaling with DDP",
      est_s={"quick": 25, "standard": 40, "full": 80}, device_kinds=("cpu", "cuda"))
def measure_scaling(ctx: EvalContext) -> list[Item]:
    """DDP weak scaling 1 -> N processes: throughput and efficiency."""
    name = "DDP scaling efficiency 1 -> N processes (weak scaling)"
    kind = getattr(ctx.device, "kind", "cpu")
    if kind == "cuda":
        import torch

        n = torch.cuda.device_count()
        if n < 2:
            return [Item.skipped("EV-6.scaling.efficiency", CLAUSE, name, unit="%",
                                 reason=f"scaling needs at least 2 GPUs; torch sees {n}")]
        backend, threads_per_process = "nccl", 1
        unit_text = "one GPU per process"
    else:
        n = min(ctx.threads, ctx.pick(quick=2, standard=4, full=8))
        if n < 2:
            return [Item.skipped("EV-6.scaling.efficiency", CLAUSE, name, unit="%",
                                 reason=f"scaling needs at least 2 CPU threads to split; the run has {ctx.threads}")]
        backend, threads_per_process = "gloo", max(1, ctx.threads // n)
        unit_text = f"{threads_per_process} thread(s) per process, in the 1-process run too"
    windows = ctx.pick(quick=4, standard=8, full=15)
    work = Path(ctx.work_dir)
    runs: dict[int, DdpRun] = {}
    for i, world in enumerate((1, n)):
        ctx.progress(f"DDP with {world} process(es)", done=i, total=2)
        config = DdpConfig(world_size=world, backend=backend, device_kind=kind,
                           threads_per_process=threads_per_process, windows=windows, seed=ctx.seed)
        runs[world] = run_ddp(config, work)
    ctx.progress("done", done=2, total=2)
    one, many = runs[1].samples_per_s, runs[n].samples_per_s
    efficiency = scaling_efficiency(one, many, n)
    base_one = statistics.median(one)
    method = (f"DistributedDataParallel ({backend}) training the digits CNN, {BATCH} samples per process per step "
              f"(weak scaling), {unit_text}; throughput = all processes' samples / window time, "
              f"{windows} windows of 20 steps after 10 warm-up steps, each window ended by a barrier; "
              f"efficiency = median throughput_{n} / ({n} x median throughput_1)")
    details = {"processes": n, "backend": backend, "runs": {str(k): v.to_dict() for k, v in runs.items()},
               "series": [{"x": [1, n], "y": [base_one, statistics.median(many)], "x_label": "processes",
                           "y_label": "samples/s", "label": "measured", "kind": "bar"},
                          {"x": [1, n], "y": [base_one, n * base_one], "x_label": "processes",
                           "y_label": "samples/s", "label": "ideal (N x 1 process)", "kind": "bar"}]}
    if kind == "cpu":
        details["note"] = ("on a CPU the processes share the memory system and caches; on a shared machine "
                           "other load lowers the N-process figure first")
    return [
        Item.measured("EV-6.scaling.efficiency", CLAUSE, name, value=100.0 * efficiency, unit="%", method=method,
                      samples=[100.0 * r / (n * base_one) for r in many], details=details),
        Item.measured("EV-6.scaling.samples_per_s.1", CLAUSE, "DDP training throughput, 1 process",
                      value=base_one, unit="samples/s", method=method, samples=list(one)),
        Item.measured(f"EV-6.scaling.samples_per_s.{n}", CLAUSE, f"DDP training throughput, {n} processes",
                      value=statistics.median(many), unit="samples/s", method=method, samples=list(many)),
    ]
