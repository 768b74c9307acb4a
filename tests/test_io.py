from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from zhisuan._io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    cache_dir,
    sha256_file,
    verify_sha256,
)
from zhisuan.errors import ChecksumError


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = b"zhisuan" * 300_000  # spans several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    verify_sha256(path, hashlib.sha256(data).hexdigest())
    with pytest.raises(ChecksumError, match="does not match"):
        verify_sha256(path, "0" * 64)


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary file left behind


def test_atomic_write_json_round_trips(tmp_path: Path) -> None:
    import json

    path = atomic_write_json(tmp_path / "sub" / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}


def test_cache_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHISUAN_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir("zoo", "x") == tmp_path / "c" / "zoo" / "x"
    assert (tmp_path / "c" / "zoo" / "x").is_dir()
    monkeypatch.delenv("ZHISUAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "zhisuan"
