"""The model repository: versioning, show/list/remove, atomic writes under crashes and concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from package_models import WEIGHT, matmul_model

from zhisuan.errors import ChecksumError, UserError
from zhisuan.serve import package as package_mod
from zhisuan.serve.package import MANIFEST, BatchingConfig
from zhisuan.serve.repository import Repository

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return matmul_model(tmp_path / "tiny.onnx")


def _visible(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.name.startswith("."))


def test_versions_latest_explicit_and_force(tiny: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    assert repo.add(tiny, name="tiny").version == 1
    assert repo.add(tiny, name="tiny", batching=BatchingConfig(4, 1.0)).version == 2
    assert repo.add(tiny, name="tiny", version=10).version == 10
    assert repo.versions("tiny") == [1, 2, 10]
    assert repo.add(tiny, name="tiny").version == 11
    with pytest.raises(UserError, match="version 10 already exists"):
        repo.add(tiny, name="tiny", version=10)
    assert repo.add(tiny, name="tiny", version=10, force=True, batching=BatchingConfig(2, 0.0)).version == 10
    assert repo.package("tiny", 10).manifest.batching.max_batch_size == 2
    assert repo.package("tiny").version == 11  # latest
    assert repo.package("tiny", 2).manifest.batching == BatchingConfig(4, 1.0)
    assert (tmp_path / "repo" / "tiny" / "2" / MANIFEST).is_file()
    with pytest.raises(UserError, match="no version 3"):
        repo.package("tiny", 3)
    with pytest.raises(UserError, match="no model 'other'"):
        repo.package("other")
    with pytest.raises(UserError, match="bad model name"):
        repo.add(tiny, name="../escape")


def test_list_show_remove(tiny: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(tiny, name="a")
    repo.add(tiny, name="a")
    repo.add(tiny, name="b", postprocess=[{"op": "argmax", "output": "y"}])
    listing = {m["name"]: m for m in repo.list()}
    assert listing["a"]["versions"] == [1, 2] and listing["a"]["latest"] == 2
    assert listing["b"]["outputs"] == [{"name": "y", "datatype": "INT64", "shape": [-1]}]
    shown = repo.show("a", 1)
    assert shown["verified"] is True and shown["version"] == 1 and shown["versions"] == [1, 2]
    assert shown["checksums"]["model.onnx"] == shown["metadata"]["source"]["sha256"]
    assert repo.remove("a", 1) == [1]
    assert repo.versions("a") == [2]
    assert repo.remove("b") == [1]
    assert [m["name"] for m in repo.list()] == ["a"]
    assert repo.remove("a") == [2]
    assert repo.list() == [] and _visible(tmp_path / "repo") == []
    with pytest.raises(UserError, match="no model 'a'"):
        repo.remove("a")


def test_a_broken_version_shows_in_list_and_fails_on_load(tiny: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(tiny, name="m")
    (tmp_path / "repo" / "m" / "1" / MANIFEST).write_text("{not json")
    assert "not valid JSON" in repo.list()[0]["error"]
    repo.add(tiny, name="m", version=1, force=True)
    model = tmp_path / "repo" / "m" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    assert "error" not in repo.list()[0]  # list reads manifests only
    with pytest.raises(ChecksumError):
        repo.show("m")


def test_a_failed_add_leaves_nothing_visible(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Repository(tmp_path / "repo")
    repo.add(tiny, name="m")
    real = package_mod._copy_hashed

    def half_copy(src: Path, dst: Path) -> str:
        real(src, dst)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(package_mod, "_copy_hashed", half_copy)
    with pytest.raises(OSError, match="No space"):
        repo.add(tiny, name="m")
    assert repo.versions("m") == [1]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".lock", "m"]
    assert repo.package("m").version == 1


def test_a_process_killed_mid_add_leaves_no_half_model(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Repository(root).add(tiny, name="m")
    # The child kills itself with SIGKILL after the model file is copied into staging but before
    # the manifest is written and the directory renamed: the worst moment for a crash.
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {SRC!r})
        from zhisuan.serve import package as p
        from zhisuan.serve.repository import Repository
        real = p._copy_hashed
        def copy_then_die(src, dst):
            digest = real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
            return digest
        p._copy_hashed = copy_then_die
        Repository({str(root)!r}).add({str(tiny)!r}, name="m")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1  # the half-written staging directory is there ...
    assert (root / leftovers[0] / "model.onnx").is_file()
    repo = Repository(root)  # ... and opening the repository again deletes it
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert repo.versions("m") == [1]
    assert repo.add(tiny, name="m").version == 2
    with repo.package("m").open_runner() as runner:
        np.testing.assert_allclose(runner.run({"x": np.eye(4, dtype=np.float32)})["y"], WEIGHT, rtol=1e-6)


def test_concurrent_adds_get_distinct_versions(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Repository(root)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        from zhisuan.serve.repository import Repository
        print(Repository({str(root)!r}).add({str(tiny)!r}, name="m").version)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    versions = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        versions.append(int(out.strip()))
    assert sorted(versions) == [1, 2, 3, 4]
    repo = Repository(root)
    assert repo.versions("m") == [1, 2, 3, 4]
    for v in versions:
        assert json.loads((root / "m" / str(v) / MANIFEST).read_text())["version"] == v
        repo.package("m", v)  # every one verifies


def test_a_live_process_staging_dir_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Repository(root)
    mine = root / ".tmp-1-abc"  # pid 1 is alive in every container and machine
    mine.mkdir()
    dead = root / ".trash-999999999-xyz"  # no such pid
    dead.mkdir()
    removed = Repository(root).cleanup()
    assert mine.is_dir() and not dead.exists() and removed == []


def test_the_names_the_server_keeps_under_the_root_are_not_model_names(tiny: Path, tmp_path: Path) -> None:
    from zhisuan.serve.config import ServerConfig
    from zhisuan.serve.repository import _LOCK

    root = tmp_path / "repo"
    repo = Repository(root)
    config = ServerConfig(repo=root)
    kept = [config.logs_path.name, config.rollout_state_path.name, _LOCK, repo._new_dir("tmp").name,
            repo._new_dir("trash").name]
    for name in {*kept, "LOGS", "Logs"}:  # also the case-folded forms a case-insensitive disk would merge
        with pytest.raises(UserError, match=r"reserved|bad model name"):
            repo.add(tiny, name=name)
        with pytest.raises(UserError, match=r"reserved|bad model name"):
            package_mod.pack(tiny, tmp_path / "pkg", name=name)
    with pytest.raises(UserError, match="'logs' is reserved: the server keeps its request logs"):
        repo.add(tiny, name="logs")
    logs_onnx = tmp_path / "logs.onnx"  # the default name (from the file) is checked too
    logs_onnx.write_bytes(tiny.read_bytes())
    with pytest.raises(UserError, match="reserved"):
        package_mod.pack(logs_onnx, tmp_path / "pkg")
    assert repo.names() == [] and not (tmp_path / "pkg").exists()


def test_removing_a_model_keeps_what_the_repository_does_not_own(tiny: Path, tmp_path: Path) -> None:
    """A repository made before 'logs' was reserved: the model 'logs' shares the request-log folder."""
    from zhisuan.serve.logs import RequestLog, query_logs

    root = tmp_path / "repo"
    repo = Repository(root)
    repo.add(tiny, name="old")
    repo.add(tiny, name="old")
    (root / "old").rename(root / "logs")
    log = RequestLog(root / "logs")
    log.write({"request_id": "r1", "model": "m", "status": 200})
    log.close()
    assert repo.versions("logs") == [1, 2]
    assert repo.remove("logs", 1) == [1]
    assert repo.remove("logs") == [2]
    assert repo.names() == [] and repo.versions("logs") == []
    assert [r["request_id"] for r in query_logs(root / "logs").records] == ["r1"]
    assert [p.name for p in (root / "logs").iterdir()] == [log.path_for(datetime.now(UTC)).name]
