"""``zhisuan optimize`` end to end through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import helper
from optimize_helpers import const, f32, make_model

from zhisuan.graph import read_name_map


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zhisuan", "optimize", *args], capture_output=True, text=True, timeout=120)


def test_cli_json(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [const("w", rng.standard_normal((4, 3)).astype(np.float32)), helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Identity", ["mm"], ["y"])]
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(make_model(nodes, [f32("x", [2, 4])], [f32("y", [2, 3])]), src)
    proc = run_cli(str(src), "-o", str(out), "--json", "--random", "2")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["nodes_before"] == 3 and data["nodes_after"] == 1
    assert data["verification"]["passed"] and data["verification"]["batches"] == 2
    saved = onnx.load(out)
    assert [n.op_type for n in saved.graph.node] == ["MatMul"]
    name_map = read_name_map(saved)
    assert name_map.get("mm") == "y" and name_map.source_sha256 is not None


def test_cli_list_passes_and_errors(tmp_path):
    proc = run_cli("--list-passes", "--json")
    assert proc.returncode == 0
    listed = {p["name"]: p for p in json.loads(proc.stdout)}
    assert listed["fold-conv-bn"]["default"] and not listed["fuse-activation"]["default"]
    assert listed["fuse-activation"]["targets"] == ["onnxruntime"]
    proc = run_cli(str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx"))
    assert proc.returncode == 1 and proc.stderr.startswith("error: model file not found")
    assert not (tmp_path / "o.onnx").exists()
