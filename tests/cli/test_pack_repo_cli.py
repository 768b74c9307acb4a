"""`zhisuan pack` and `zhisuan repo add|list|show|remove` end to end, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import assert_one_line_error, error_line, usage_error_line
from onnx import TensorProto, helper, numpy_helper


def _zhisuan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zhisuan", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["scores"])], "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 4])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "never-seen.onnx"
    onnx.save(proto, str(path))
    return path



def test_pack_json_and_table(model: Path, tmp_path: Path) -> None:
    post = tmp_path / "post.json"
    post.write_text(json.dumps([{"op": "topk", "output": "scores", "k": 2, "indices_as": "classes"}]))
    proc = _zhisuan("pack", str(model), "-o", str(tmp_path / "pkg"), "--name", "scorer", "--version", "4",
                    "--max-batch", "16", "--max-delay-ms", "3.5", "--preferred-batch", "8,16",
                    "--postprocess", f"@{post}", "--metadata", '{"team": "x"}', "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["name"], data["version"], data["format"]) == ("scorer", 4, "onnx")
    assert data["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 2]}]
    assert [o["name"] for o in data["outputs"]] == ["scores", "classes"]
    assert data["batching"] == {"max_batch_size": 16, "max_queue_delay_ms": 3.5, "preferred_batch_sizes": [8, 16]}
    assert data["metadata"]["team"] == "x" and len(data["checksums"]["model.onnx"]) == 64
    again = _zhisuan("pack", str(model), "-o", str(tmp_path / "pkg"))
    assert_one_line_error(again, "already exists; use --force")
    forced = _zhisuan("pack", str(model), "-o", str(tmp_path / "pkg"), "--force")
    assert forced.returncode == 0 and "packed never-seen version 1" in forced.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preprocess", "[{bad json"], "--preprocess: not valid JSON"),
        (["--postprocess", '[{"op": "explode", "output": "scores"}]'], "unknown op 'explode'"),
        (["--runtime", "torch"], "cannot load onnx"),
        (["--metadata", "[1]"], "--metadata must be a JSON object"),
    ],
)
def test_pack_bad_options_are_one_line_errors(model: Path, tmp_path: Path, args: list[str], message: str) -> None:
    assert_one_line_error(_zhisuan("pack", str(model), "-o", str(tmp_path / "pkg"), *args), message)
    assert not (tmp_path / "pkg").exists()


def test_pack_out_of_range_option_is_a_usage_error(model: Path, tmp_path: Path) -> None:
    proc = _zhisuan("pack", str(model), "-o", str(tmp_path / "pkg"), "--max-batch", "0")
    assert "'--max-batch'" in usage_error_line(proc)
    assert not (tmp_path / "pkg").exists()


def test_pack_refuses_a_pickle(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps([1, 2]))
    proc = _zhisuan("pack", str(tmp_path / "model.pkl"), "-o", str(tmp_path / "pkg"))
    assert "never loads pickles" in error_line(proc)
    assert not (tmp_path / "pkg").exists()  # nothing was written


def test_repo_add_list_show_remove(model: Path, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    for expected in (1, 2):
        proc = _zhisuan("repo", "add", str(model), "--repo", repo, "--name", "scorer", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["version"] == expected
    proc = _zhisuan("repo", "add", str(model), "--repo", repo, "--name", "scorer", "--version", "7", "--max-batch", "2")
    assert proc.returncode == 0 and "added scorer version 7" in proc.stdout
    assert_one_line_error(_zhisuan("repo", "add", str(model), "--repo", repo, "--name", "scorer", "--version", "7"),
                    "version 7 already exists")

    listing = json.loads(_zhisuan("repo", "list", "--repo", repo, "--json").stdout)
    assert [(m["name"], m["versions"]) for m in listing] == [("scorer", [1, 2, 7])]
    table = _zhisuan("repo", "list", "--repo", repo)
    assert table.returncode == 0 and "scorer" in table.stdout

    shown = json.loads(_zhisuan("repo", "show", "scorer", "--version", "7", "--repo", repo, "--json").stdout)
    assert shown["verified"] is True and shown["batching"]["max_batch_size"] == 2
    assert "verified scorer version 2" in _zhisuan("repo", "show", "scorer", "--version", "2", "--repo", repo).stdout

    assert_one_line_error(_zhisuan("repo", "remove", "scorer", "--version", "1", "--repo", repo), "without --yes")
    removed = json.loads(_zhisuan("repo", "remove", "scorer", "--version", "1", "--repo", repo, "--yes", "--json").stdout)
    assert removed == {"name": "scorer", "removed_versions": [1], "remaining_versions": [2, 7]}
    assert_one_line_error(_zhisuan("repo", "show", "scorer", "--version", "1", "--repo", repo), "has no version 1")
    assert_one_line_error(_zhisuan("repo", "show", "nothing", "--repo", repo), "no model 'nothing'")
    assert_one_line_error(_zhisuan("repo", "list", "--repo", str(tmp_path / "missing")), "repository not found")

    # Tampering after the fact is caught by show (which hashes every file).
    weights = tmp_path / "repo" / "scorer" / "2" / "model.onnx"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert_one_line_error(_zhisuan("repo", "show", "scorer", "--version", "2", "--repo", repo), "does not match")


def test_a_reserved_model_name_is_a_one_line_error(model: Path, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert_one_line_error(_zhisuan("repo", "add", str(model), "--repo", repo, "--name", "logs"), "'logs' is reserved")
    assert_one_line_error(_zhisuan("pack", str(model), "-o", str(tmp_path / "pkg"), "--name", "logs"), "reserved")
    assert not (tmp_path / "pkg").exists()


def test_repo_add_bounds_the_batching_values(model: Path, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    proc = _zhisuan("repo", "add", str(model), "--repo", repo, "--name", "m", "--max-batch", str(10**20))
    assert "--max-batch" in usage_error_line(proc)  # refused by the command line's range (exit 2)
    assert _zhisuan("repo", "list", "--repo", repo, "--json").stdout.strip() in ("[]", "")
