"""EV-10 security: no job reads an earlier job's data, model files are verified, no code runs from them.

- **Memory residue across jobs**: one job (a child process) fills a buffer with a recognisable
  64-bit pattern — on a CPU in host memory, on a GPU in a CUDA allocation — and exits; a second,
  new job allocates uninitialised memory of the same size (``numpy.empty`` and ``torch.empty``,
  on the GPU ``torch.empty`` on CUDA) and counts the pattern's bytes in it. The pass is 0 bytes.
  Inside one process the allocator handing a freed block back is by design (glibc's heap for small
  blocks, PyTorch's CUDA caching allocator): that is measured and reported too, for information;
  cross-job leakage is the test.
- **Checksums before loading**: zoo models in the cache carry a sha256 manifest. A copy of the
  cache gets one flipped byte; zhisuan must notice and rebuild from the verified source instead of
  loading it. A shipped weights file with a flipped byte must be refused by its pinned sha256
  before it is parsed (``WeightsFile.path``), while the intact copy is accepted (a control).
- **Nothing unpickled from a model file**: a pickle whose unpickling writes a marker file is
  saved as ``.pkl``, a torch ``.pt`` checkpoint, an ``.onnx`` file and an ``.npz`` input file, and
  handed to every zhisuan loader. Each must refuse it and the marker must never appear. A control
  run with plain ``pickle.load`` in a throwaway child process shows the payload really runs code.

>>> from zhisuan.bench.security import count_pattern_bytes, PATTERN
>>> import numpy as np
>>> count_pattern_bytes(np.full(4, PATTERN, dtype=np.uint64), PATTERN)
32
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan._child import child_command, child_env
from zhisuan.bench.schema import Item
from zhisuan.bench.tasks import EvalContext, task
from zhisuan.errors import ChecksumError, UserError
from zhisuan.progress import Recorder
from zhisuan.results import Record

CLAUSE = "EV-10"
PATTERN = 0x5A5A_C0DE_D00D_F00D  # below 2**63, so it also fits a signed int64 CUDA tensor


# ---------------------------------------------------------------------------------------------
# memory residue


def job_pattern(nonce: int) -> int:
    """The 64-bit word one evaluation writes: PATTERN mixed with a nonce, kept below 2**63."""
    return (PATTERN ^ (nonce & 0xFFFF_FFFF)) & 0x7FFF_FFFF_FFFF_FFFF


def count_pattern_bytes(buffer: Any, word: int) -> int:
    """Bytes of ``buffer`` that belong to 8-byte-aligned copies of ``word`` (its native byte order)."""
    data = np.asarray(buffer)
    raw = data.reshape(-1).view(np.uint8)
    usable = raw[: raw.size - raw.size % 8]
    return 8 * int(np.count_nonzero(usable.view(np.uint64) == np.uint64(word)))


def same_process_reuse(allocate: Callable[[int], np.ndarray], size_bytes: int, word: int) -> int:
    """Fill a block, free it, allocate the same size again uninitialised: pattern bytes seen."""
    block = allocate(size_bytes)
    block.view(np.uint64)[:] = word
    del block
    fresh = allocate(size_bytes)
    return count_pattern_bytes(fresh, word)


_PROBE = "zhisuan.bench.children.security_probe"  # one memory job per fresh process


def run_probe(mode: str, kind: str, index: int, sizes: Sequence[int], word: int, *, use_torch: bool = True,
              timeout_s: float = 120.0) -> dict[str, int]:
    """Run one memory job in a fresh child process and return its JSON report.

    ``mode`` "fill" writes the pattern over ``sizes[0]`` bytes; "scan" allocates ``sizes[0]``
    bytes uninitialised and counts it; "same" does fill-free-allocate for each size in one process
    (keys ``"<size>:<allocator>"``). On a CPU ``use_torch`` adds ``torch.empty`` to ``numpy.empty``;
    on a GPU torch is always used.
    """
    sizes_arg = ",".join(str(int(s)) for s in sizes)
    done = subprocess.run(child_command(_PROBE, mode, kind, str(index), sizes_arg, str(word),
                                        "torch" if use_torch or kind == "cuda" else "numpy"),
                          capture_output=True, timeout=timeout_s, check=False, env=child_env())
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"the memory {mode} job failed ({done.returncode}): {tail[0][:300]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@dataclass(frozen=True)
class ResidueResult(Record):
    kind: str
    size_bytes: int
    filled_bytes: int  # the first job's own count: proves the pattern was really written
    cross_job: dict[str, int]  # allocator -> pattern bytes the second job saw
    same_process: dict[str, dict[str, int]]  # size label -> allocator -> pattern bytes

    @property
    def leaked_bytes(self) -> int:
        return sum(self.cross_job.values())

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "leaked_bytes": self.leaked_bytes}


def memory_residue(kind: str, index: int, *, size_bytes: int, word: int,
                   probe: Callable[..., dict[str, int]] | None = None,
                   same_sizes: Sequence[int] = (64 * 1024,), use_torch: bool = True) -> ResidueResult:
    """Fill in one job, scan fresh allocations in the next; also the same-process reuse, per size."""
    if probe is None:
        def probe(mode: str, kind: str, index: int, sizes: Sequence[int], word: int) -> dict[str, int]:
            return run_probe(mode, kind, index, sizes, word, use_torch=use_torch)

    filled = probe("fill", kind, index, [size_bytes], word)
    scanned = probe("scan", kind, index, [size_bytes], word)
    sizes = [*same_sizes, size_bytes]
    reuse = probe("same", kind, index, sizes, word)
    same: dict[str, dict[str, int]] = {}
    for key, found in reuse.items():
        size, _, allocator = key.partition(":")
        same.setdefault(_size_label(int(size)), {})[allocator] = int(found)
    return ResidueResult(kind, size_bytes, int(filled.get("filled_bytes", 0)), scanned, same)


def _size_label(size: int) -> str:
    return f"{size // (1 << 20)} MiB" if size >= 1 << 20 else f"{size // 1024} KiB"


# ---------------------------------------------------------------------------------------------
# checksums before loading


@dataclass(frozen=True)
class TamperCase(Record):
    what: str
    refused: bool  # the tampered bytes were refused (never parsed)
    control_ok: bool  # the intact file was accepted, so the check is not vacuous
    detail: str


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def flip_byte(path: Path, offset: int | None = None) -> int:
    """Invert one byte of ``path`` in place (the middle one by default); returns its offset."""
    data = bytearray(path.read_bytes())
    if not data:
        raise UserError(f"{path} is empty: nothing to tamper with")
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return at


def tampered_cache(model: str, scratch: Path) -> TamperCase:
    """Copy ``model``'s verified cache entry, flip a byte, ask the zoo for it under that cache."""
    from zhisuan import zoo
    from zhisuan._io import sha256_file

    source = zoo.export(model)  # verified against its manifest
    entry_dir = source.path.parent
    cache = scratch / "cache"
    target_dir = cache / entry_dir.relative_to(entry_dir.parents[2])  # zoo/<name>/<key>
    shutil.copytree(entry_dir, target_dir)
    copy = target_dir / source.path.name
    with _env("ZHISUAN_CACHE_DIR", str(cache)):
        control = zoo.export(model)  # the intact copy must be reused as it is
    offset = flip_byte(copy)
    tampered_sha = sha256_file(copy)
    seen = Recorder()
    with _env("ZHISUAN_CACHE_DIR", str(cache)):
        result = zoo.export(model, progress=seen)
    messages = [text for text, _done, _total in seen.events]
    served_sha = sha256_file(result.path)
    refused = (not result.cached) and served_sha == source.sha256 and served_sha != tampered_sha
    noticed = [m for m in messages if "does not match" in m]
    detail = (f"flipped byte {offset} of {copy.name} ({source.size_bytes:,} bytes) in a copy of the cache; "
              f"zoo.export said: {noticed[0] if noticed else 'nothing'}; it served a file with the manifest's "
              f"sha256 {served_sha[:12]}… (tampered {tampered_sha[:12]}…), rebuilt={not result.cached}")
    control_ok = control.cached and control.path == copy
    return TamperCase(f"cached ONNX file of {model}", refused, control_ok, detail)


def tampered_weights(scratch: Path) -> TamperCase:
    """A shipped weights file with a flipped byte must fail its pinned sha256 before it is parsed."""
    import importlib

    from zhisuan import zoo
    from zhisuan._io import sha256_file
    from zhisuan.zoo.base import WeightsFile

    shipped = zoo.get("efficientnet-lite0").weights
    assert shipped is not None  # a shipped-weights entry
    original = shipped.path()  # the real shipped .pth, verified
    package = f"zs_tamper_probe_{secrets.token_hex(4)}"
    root = scratch / "site"
    intact_dir = root / package / "models"
    intact_dir.mkdir(parents=True)
    (root / package / "__init__.py").write_text("", encoding="utf-8")
    shutil.copyfile(original, intact_dir / "intact.pth")
    shutil.copyfile(original, intact_dir / "tampered.pth")
    offset = flip_byte(intact_dir / "tampered.pth")
    pinned = sha256_file(original)

    def weights(name: str) -> WeightsFile:
        return WeightsFile(distribution=package, module=package, relpath=f"models/{name}", sha256=pinned,
                           install_hint="(a test package)")

    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        try:
            weights("intact.pth").path()
            control_ok = True
        except UserError:
            control_ok = False
        try:
            weights("tampered.pth").path()
            refused, why = False, "accepted"
        except ChecksumError as exc:
            refused, why = True, str(exc).split(": ", 1)[-1]
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()
    return TamperCase(f"shipped weights {shipped.relpath} ({shipped.distribution})", refused, control_ok,
                      f"flipped byte {offset} of a copy; WeightsFile.path() -> {why}")


# ---------------------------------------------------------------------------------------------
# nothing unpickled


class _Payload:
    """Unpickling this runs ``exec`` on a line that writes ``marker``: the classic malicious model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').write('code from a model file ran')",)


@dataclass(frozen=True)
class LoaderAttempt(Record):
    loader: str
    file: str
    refused: bool
    error: str
    marker_created: bool


@dataclass(frozen=True)
class UnpickleResult(Record):
    attempts: tuple[LoaderAttempt, ...]
    marker_created: bool  # by any zhisuan loader
    payload_live: bool  # the control (plain pickle.load in a child) did write its marker


def write_payloads(directory: Path, marker: Path) -> dict[str, Path]:
    """The payload as .pkl, .pt (a torch checkpoint), .onnx and .npz files."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "pkl": directory / "model.pkl",
        "pt": directory / "model.pt",
        "onnx": directory / "model.onnx",
        "npz": directory / "inputs.npz",
    }
    raw = pickle.dumps(_Payload(marker))
    files["pkl"].write_bytes(raw)
    files["onnx"].write_bytes(raw)  # a pickle posing as an ONNX model
    torch.save({"weight": _Payload(marker)}, files["pt"])
    np.savez(files["npz"], x=np.array([_Payload(marker)], dtype=object))
    return files


def _loaders(files: dict[str, Path]) -> list[tuple[str, Path, Callable[[], Any]]]:
    from zhisuan.runtime import load_runtime
    from zhisuan.runtime.feeds import load_feeds
    from zhisuan.zoo.torch_weights import read_state_dict

    def safetensors_load(path: Path) -> Any:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")

    def graph_load(path: Path) -> Any:
        from zhisuan.graph.onnx_io import load_model

        return load_model(path)

    return [
        ("load_runtime(onnxruntime)", files["onnx"], lambda: load_runtime(files["onnx"], "onnxruntime")),
        ("load_runtime(onnxruntime)", files["pt"], lambda: load_runtime(files["pt"], "onnxruntime")),
        ("load_runtime(openvino)", files["onnx"], lambda: load_runtime(files["onnx"], "openvino")),
        ("load_runtime(openvino)", files["pt"], lambda: load_runtime(files["pt"], "openvino")),
        ("load_runtime(torch)", files["pt"], lambda: load_runtime(files["pt"], "torch")),
        ("load_runtime(torch)", files["pkl"], lambda: load_runtime(files["pkl"], "torch")),
        ("zoo .pth reader (torch.load weights_only=True)", files["pt"], lambda: read_state_dict(files["pt"])),
        ("zoo .pth reader (torch.load weights_only=True)", files["pkl"], lambda: read_state_dict(files["pkl"])),
        ("zoo safetensors reader", files["pt"], lambda: safetensors_load(files["pt"])),
        ("zhisuan.graph.load_model (convert/optimize/quantize)", files["onnx"], lambda: graph_load(files["onnx"])),
        ("runtime.feeds.load_feeds (--data)", files["npz"], lambda: load_feeds(files["npz"])),
    ]


_CONTROL = "zhisuan.bench.children.security_unpickle_control"


def unpickle_check(scratch: Path, *, timeout_s: float = 60.0) -> UnpickleResult:
    """Hand the payload files to every zhisuan loader; then prove the payload live in a child process."""
    marker = scratch / "MARKER-zhisuan-loader-ran-code"
    files = write_payloads(scratch / "payload", marker)
    attempts = []
    for loader, path, call in _loaders(files):
        refused, error = False, ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol of a refused file
                result = call()
            with contextlib.suppress(Exception):
                result.close()
        except Exception as exc:  # a refusal is the expected outcome, whatever its type
            refused = True
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ''}"
        attempts.append(LoaderAttempt(loader, path.name, refused, error, marker.exists()))
    control_marker = scratch / "MARKER-control"
    control_file = scratch / "control.pkl"
    control_file.write_bytes(pickle.dumps(_Payload(control_marker)))
    subprocess.run(child_command(_CONTROL, str(control_file)), capture_output=True, timeout=timeout_s,
                   check=False, env=child_env())
    return UnpickleResult(tuple(attempts), marker.exists(), control_marker.exists())


# ---------------------------------------------------------------------------------------------
# tasks


@task("EV-10.security", clause=CLAUSE, title="Memory residue across jobs, checksums, no unpickling",
      est_s={"quick": 15, "standard": 20, "full": 30}, device_kinds=("cpu", "cuda"))
def measure_security(ctx: EvalContext) -> list[Item]:
    """Freed memory across jobs, checksum verification before loading, no code from model files."""
    kind = getattr(ctx.device, "kind", "cpu")
    index = int(getattr(ctx.device, "index", 0))
    base = Path(ctx.work_dir)
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ev10-", dir=base))
    items: list[Item] = []
    try:
        ctx.progress("memory residue across jobs", done=0, total=3)
        size = ctx.pick(quick=64, standard=256, full=1024) << 20 if kind == "cuda" else ctx.pick(
            quick=64, standard=128, full=512) << 20
        word = job_pattern(int(time.time_ns()))
        residue = memory_residue(kind, index, size_bytes=size, word=word)
        where = (f"a {_size_label(size)} CUDA allocation on device {index}" if kind == "cuda"
                 else f"a {_size_label(size)} numpy block and a {_size_label(size)} torch block of host memory")
        written = residue.filled_bytes
        method = (f"job 1 (a child process) writes the 64-bit pattern {word:#018x} over {where} "
                  f"({written:,} pattern bytes counted after writing) and exits; job 2, a new process, allocates "
                  f"{_size_label(size)} uninitialised with each allocator ({', '.join(residue.cross_job)}) and "
                  "counts the 8-byte-aligned copies of the pattern in them")
        ok = residue.leaked_bytes == 0 and written > 0
        items.append(Item.measured(
            "EV-10.memory.cross_job", CLAUSE, "Earlier job's data readable in freed memory (across processes)",
            value=residue.leaked_bytes, unit="bytes", method=method, repeats=len(residue.cross_job),
            status="pass" if ok else "fail",
            reason=None if ok else (f"job 2 found {residue.leaked_bytes:,} bytes of job 1's pattern: {residue.cross_job}"
                                    if written else "job 1 could not write the pattern; the check is void"),
            details={"residue": residue.to_dict(), "higher_is_better": False}))
        same_rows = [[label, alloc, found] for label, counts in residue.same_process.items()
                     for alloc, found in counts.items()]
        items.append(Item.measured(
            "EV-10.memory.same_process", CLAUSE, "Freed memory reused inside one process (informational)",
            value=sum(found for _, _, found in same_rows), unit="bytes", repeats=len(same_rows),
            method=("inside one process: fill a block with the pattern, free it, allocate the same size "
                    "uninitialised and count the pattern; same-process reuse is by design (allocator caches, "
                    "glibc's heap below its mmap threshold, PyTorch's CUDA caching allocator), cross-job "
                    "leakage is the test (EV-10.memory.cross_job)"),
            details={"table": {"columns": ["block size", "allocator", "pattern bytes found"], "rows": same_rows},
                     "higher_is_better": False}))

        ctx.progress("checksums before loading", done=1, total=3)
        cases = [tampered_cache("ppocr-cls", scratch / "cache-check"), tampered_weights(scratch / "weights-check")]
        ok = all(c.refused and c.control_ok for c in cases)
        items.append(Item.measured(
            "EV-10.checksum", CLAUSE, "Tampered model files refused before loading",
            value=sum(c.refused for c in cases), unit=f"of {len(cases)} tampered files", repeats=len(cases),
            method=("one byte flipped in (1) a copy of a zoo model's cache entry, asked for through zoo.export "
                    "with ZHISUAN_CACHE_DIR pointing at the copy — it must be detected by its sha256 manifest "
                    "and rebuilt from the verified source, never loaded; (2) a copy of a shipped weights file, "
                    "resolved through WeightsFile.path() with the pinned sha256 — it must raise ChecksumError "
                    "before the file is parsed, while the intact copy is accepted"),
            status="pass" if ok else "fail",
            reason=None if ok else "; ".join(f"{c.what}: {c.detail}" for c in cases if not (c.refused and c.control_ok)),
            details={"cases": [c.to_dict() for c in cases]}))

        ctx.progress("no code from model files", done=2, total=3)
        result = unpickle_check(scratch / "unpickle")
        accepted = [a for a in result.attempts if not a.refused]
        ok = not result.marker_created and not accepted and result.payload_live
        if not result.payload_live:
            reason = "the control (plain pickle.load in a child process) did not run the payload: the check is void"
        elif result.marker_created:
            culprit = next((a for a in result.attempts if a.marker_created), None)
            reason = f"code from a model file ran (first seen after {culprit.loader if culprit else '?'})"
        elif accepted:
            reason = "loaded without error: " + ", ".join(f"{a.loader} {a.file}" for a in accepted)
        else:
            reason = None
        items.append(Item.measured(
            "EV-10.no_unpickle", CLAUSE, "Code executed from a model file", value=int(result.marker_created),
            unit="loaders that ran code", repeats=len(result.attempts), status="pass" if ok else "fail", reason=reason,
            method=("a pickle whose unpickling writes a marker file, saved as .pkl, a torch .pt checkpoint, an "
                    ".onnx file and an .npz input, handed to every zhisuan loader "
                    f"({len(result.attempts)} attempts); each must refuse it and the marker must never appear; "
                    "control: plain pickle.load of the same payload in a throwaway child process "
                    + ("did write its marker (the payload is live)" if result.payload_live else "wrote nothing")),
            details={"unpickle": result.to_dict(), "higher_is_better": False,
                     "table": {"columns": ["loader", "file", "refused", "error", "marker created"],
                               "rows": [[a.loader, a.file, a.refused, a.error, a.marker_created]
                                        for a in result.attempts]}}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ctx.progress("done", done=3, total=3)
    return items
