"""Model packages: round trip, checksums, tampering, pickles, processing, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from package_models import WEIGHT, image_model, matmul_model

from zhisuan import __version__
from zhisuan.errors import ChecksumError, UserError
from zhisuan.serve import package as package_mod
from zhisuan.serve.package import MANIFEST, BatchingConfig, TensorSig, _manifest_digest, load_package, pack


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return matmul_model(tmp_path / "tiny.onnx")


def _rewrite_manifest(pkg: Path, change: dict) -> None:
    """Edit the manifest and re-seal its self-digest, as an attacker who knows the format would."""
    data = json.loads((pkg / MANIFEST).read_text())
    data.update(change)
    data["manifest_sha256"] = _manifest_digest(data)
    (pkg / MANIFEST).write_text(json.dumps(data))


def test_round_trip_signature_checksums_metadata(tiny: Path, tmp_path: Path) -> None:
    pkg = pack(tiny, tmp_path / "pkg", name="tiny", version=3, batching=BatchingConfig(16, 4.5, (4, 8)),
               metadata={"owner": "team-a"})
    loaded = load_package(tmp_path / "pkg")
    m = loaded.manifest
    assert (m.name, m.version, m.format, m.runtime, m.model_file) == ("tiny", 3, "onnx", "onnxruntime", "model.onnx")
    assert m.inputs == (TensorSig("x", "FP32", (-1, 4)),)
    assert m.outputs == (TensorSig("y", "FP32", (-1, 3)),)
    assert m.batching == BatchingConfig(16, 4.5, (4, 8))
    assert m.checksums == {"model.onnx": hashlib.sha256(tiny.read_bytes()).hexdigest()}
    assert m.metadata["owner"] == "team-a"
    assert m.metadata["zhisuan_version"] == __version__
    assert m.metadata["source"] == {"kind": "file", "zoo_model": None, "path": str(tiny.resolve()),
                                    "sha256": m.checksums["model.onnx"]}
    assert m.metadata["created_at"].endswith("+00:00")
    assert m.metadata["onnx"]["opsets"] == {"ai.onnx": 17}
    assert m == pkg.manifest
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == [MANIFEST, "model.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with loaded.open_runner(threads=1) as runner:
        y = loaded.postprocess(runner.run(loaded.preprocess({"x": x})))["y"]
    np.testing.assert_allclose(y, x @ WEIGHT, rtol=1e-5, atol=1e-6)


def test_processing_changes_the_served_signature(tmp_path: Path) -> None:
    model = image_model(tmp_path / "img.onnx")
    pkg = pack(
        model, tmp_path / "pkg",
        preprocess=[{"op": "cast", "input": "x", "from": "UINT8", "dtype": "FP32"},
                    {"op": "scale", "input": "x", "scale": 0.5, "offset": -1.0},
                    {"op": "transpose", "input": "x", "perm": [0, 3, 1, 2]}],
        postprocess=[{"op": "argmax", "output": "s", "as": "channel"},
                     {"op": "labels", "output": "channel", "labels": ["red", "green", "blue"], "as": "colour"}],
    )
    loaded = load_package(pkg.path)
    assert loaded.manifest.inputs == (TensorSig("x", "UINT8", (-1, 4, 5, 3)),)
    assert [(s.name, s.datatype, s.shape) for s in loaded.manifest.outputs] == [
        ("s", "FP32", (-1, 3)), ("channel", "INT64", (-1,)), ("colour", "BYTES", (-1,))]
    assert loaded.model_signature["inputs"] == [TensorSig("x", "FP32", (-1, 3, 4, 5))]
    pixels = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    pixels[0, ..., 2] = 200  # blue
    pixels[1, ..., 1] = 100  # green
    with loaded.open_runner() as runner:
        out = loaded.postprocess(runner.run(loaded.preprocess({"x": pixels})))
    expected = (pixels.astype(np.float64) * 0.5 - 1.0).sum(axis=(1, 2))
    np.testing.assert_allclose(out["s"], expected, rtol=1e-6)
    assert out["colour"].tolist() == [b"blue", b"green"]
    with pytest.raises(UserError, match="is float32, the model takes uint8"):
        loaded.preprocess({"x": pixels.astype(np.float32)})


def test_the_only_tensor_need_not_be_named(tmp_path: Path) -> None:
    model = image_model(tmp_path / "img.onnx")
    pkg = pack(model, tmp_path / "pkg",
               preprocess=[{"op": "normalize", "mean": [1, 2, 3], "std": [2, 2, 2], "axis": 1}],
               postprocess=[{"op": "softmax"}, {"op": "topk", "k": 2}])
    assert pkg.manifest.preprocess[0]["input"] == "x"  # written into the manifest: it stays explicit
    assert [s.get("output") for s in pkg.manifest.postprocess] == ["s", "s"]
    x = np.ones((1, 3, 4, 5), dtype=np.float32)
    with pkg.open_runner() as runner:
        out = pkg.postprocess(runner.run(pkg.preprocess({"x": x})))
    assert out["s"].shape == (1, 2) and out["s_indices"].tolist() == [[0, 1]]  # channel 0: (1-1)/2 -> largest
    with pytest.raises(UserError, match="say which tensor it takes with 'output'"):
        pack(model, tmp_path / "pkg2", postprocess=[{"op": "topk", "k": 1}, {"op": "softmax"}])


def test_labels_file_is_copied_into_the_package_and_checksummed(tiny: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n", encoding="utf-8")
    pkg = pack(tiny, tmp_path / "pkg", postprocess=[{"op": "argmax", "output": "y"},
                                                    {"op": "labels", "output": "y", "labels_file": str(names)}])
    assert pkg.manifest.postprocess[1]["labels_file"] == "labels/names.txt"
    assert "labels/names.txt" in pkg.manifest.checksums
    names.unlink()  # the package no longer needs the original
    loaded = load_package(pkg.path)
    x = np.eye(4, dtype=np.float32)
    with loaded.open_runner() as runner:
        out = loaded.postprocess(runner.run({"x": x}))
    assert out["y"].tolist() == [["a", "b", "c"][i].encode() for i in np.argmax(x @ WEIGHT, axis=1)]


def test_tampered_model_file_is_refused(tiny: Path, tmp_path: Path) -> None:
    pkg = pack(tiny, tmp_path / "pkg")
    data = bytearray((pkg.path / "model.onnx").read_bytes())
    data[-1] ^= 0x01
    (pkg.path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match"):
        load_package(pkg.path)
    with pytest.raises(ChecksumError):  # a package opened before the change re-checks what it loads
        pkg.open_runner()


def test_edited_manifest_is_refused(tiny: Path, tmp_path: Path) -> None:
    pkg = pack(tiny, tmp_path / "pkg")
    data = json.loads((pkg.path / MANIFEST).read_text())
    data["batching"]["max_batch_size"] = 64
    (pkg.path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ChecksumError, match="manifest was modified"):
        load_package(pkg.path)


def test_unlisted_missing_and_linked_files_are_refused(tiny: Path, tmp_path: Path) -> None:
    pkg = pack(tiny, tmp_path / "pkg")
    (pkg.path / "extra.txt").write_text("x")
    with pytest.raises(UserError, match=r"files not in the manifest: extra\.txt"):
        load_package(pkg.path)
    (pkg.path / "extra.txt").unlink()
    os.symlink(tiny, pkg.path / "link.onnx")
    with pytest.raises(UserError, match="symbolic link"):
        load_package(pkg.path)
    (pkg.path / "link.onnx").unlink()
    (pkg.path / "model.onnx").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        load_package(pkg.path)


def test_pickles_are_never_packed_or_loaded(tiny: Path, tmp_path: Path) -> None:
    payload = pickle.dumps({"weights": [1, 2, 3]})
    for name in ("model.pkl", "model.pt", "disguised.onnx"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(UserError, match="never loads pickles"):
            pack(tmp_path / name, tmp_path / f"pkg-{name}")
        assert not (tmp_path / f"pkg-{name}").exists()
    # A package whose manifest lists a pickle (re-sealed by someone who knows the format) is refused too.
    pkg = pack(tiny, tmp_path / "pkg")
    (pkg.path / "extra.pkl").write_bytes(payload)
    checksums = dict(pkg.manifest.checksums, **{"extra.pkl": hashlib.sha256(payload).hexdigest()})
    _rewrite_manifest(pkg.path, {"checksums": checksums})
    with pytest.raises(UserError, match="never loads pickles"):
        load_package(pkg.path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "pickle"}, "not loadable"),
        ({"format": "torchscript"}, "not loadable"),
        ({"schema": "zhisuan.package/99"}, "cannot read it"),
        ({"model_file": "../outside.onnx"}, "not among the checksummed files"),
        ({"runtime": "torch"}, "cannot load onnx"),
        ({"name": "../evil"}, "bad model name"),
        ({"surprise": 1}, "unknown field"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 7]}]}, "do not follow from the model signature"),
    ],
)
def test_manifest_schema_is_checked(tiny: Path, tmp_path: Path, change: dict, message: str) -> None:
    pkg = pack(tiny, tmp_path / "pkg")
    _rewrite_manifest(pkg.path, change)
    with pytest.raises(UserError, match=message):
        load_package(pkg.path)


def test_batching_needs_a_dynamic_batch_axis(tmp_path: Path) -> None:
    fixed = matmul_model(tmp_path / "fixed.onnx", batch=1)
    pkg = pack(fixed, tmp_path / "pkg")
    assert pkg.manifest.batching.max_batch_size == 1 and pkg.manifest.inputs[0].shape == (1, 4)
    with pytest.raises(UserError, match="cannot be batched"):
        pack(fixed, tmp_path / "pkg2", batching=BatchingConfig(max_batch_size=4))
    with pytest.raises(UserError, match="max batch size"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(UserError, match="preferred batch sizes"):
        BatchingConfig(max_batch_size=4, preferred_batch_sizes=(8,))


def test_preprocessing_must_produce_what_the_model_takes(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="the model takes FP32"):
        pack(tiny, tmp_path / "pkg", preprocess=[{"op": "cast", "input": "x", "dtype": "FP16"}])
    with pytest.raises(UserError, match=r"'k' must be in 1\.\.3"):
        pack(tiny, tmp_path / "pkg", postprocess=[{"op": "topk", "output": "y", "k": 4}])
    assert not (tmp_path / "pkg").exists()


def test_existing_output_needs_force_and_is_replaced_atomically(tiny: Path, tmp_path: Path) -> None:
    pack(tiny, tmp_path / "pkg", version=1)
    with pytest.raises(UserError, match="already exists"):
        pack(tiny, tmp_path / "pkg", version=2)
    assert pack(tiny, tmp_path / "pkg", version=2, force=True).manifest.version == 2
    assert load_package(tmp_path / "pkg").manifest.version == 2
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="not a zhisuan package"):
        pack(tiny, tmp_path / "other", force=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_midway_leaves_nothing(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_copy(src: Path, dst: Path) -> str:
        calls.append(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes()[:10])  # half a file, then the disk "fills up"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(package_mod, "_copy_hashed", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        pack(tiny, tmp_path / "pkg")
    assert calls and not (tmp_path / "pkg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_onnx_external_data_files_travel_with_the_model(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    model = matmul_model(src / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                         location="ext.weights", size_threshold=0)
    pkg = load_package(pack(model, tmp_path / "pkg").path)
    assert sorted(pkg.manifest.checksums) == ["ext.weights", "model.onnx"]
    x = np.ones((2, 4), dtype=np.float32)
    with pkg.open_runner() as runner:
        np.testing.assert_allclose(runner.run({"x": x})["y"], x @ WEIGHT, rtol=1e-6)


def test_openvino_ir_is_packed_and_served_by_openvino(tiny: Path, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    ov.save_model(ov.convert_model(str(tiny)), str(tmp_path / "ir" / "tiny.xml"), compress_to_fp16=False)
    pkg = pack(tmp_path / "ir" / "tiny.xml", tmp_path / "pkg")
    assert (pkg.manifest.format, pkg.manifest.runtime, pkg.manifest.model_file) == ("openvino", "openvino", "model.xml")
    assert sorted(pkg.manifest.checksums) == ["model.bin", "model.xml"]
    assert pkg.manifest.inputs[0].datatype == "FP32" and pkg.manifest.inputs[0].shape == (-1, 4)
    x = np.ones((3, 4), dtype=np.float32)
    with load_package(pkg.path).open_runner(threads=1) as runner:
        np.testing.assert_allclose(runner.run({"x": x})["y"], x @ WEIGHT, rtol=1e-5)
    with pytest.raises(UserError, match="cannot load openvino"):
        pack(tmp_path / "ir" / "tiny.xml", tmp_path / "pkg2", runtime="onnxruntime")
    (tmp_path / "ir" / "tiny.bin").unlink()
    with pytest.raises(UserError, match="needs its weights"):
        pack(tmp_path / "ir" / "tiny.xml", tmp_path / "pkg3")


def test_unknown_sources_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"neither|not found"):
        pack("no-such-model", tmp_path / "pkg")
    (tmp_path / "model.tflite").write_bytes(b"TFL3")
    with pytest.raises(UserError, match=r"ONNX .* or OpenVINO IR"):
        pack(tmp_path / "model.tflite", tmp_path / "pkg")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not protobuf at all")
    with pytest.raises(UserError, match="cannot read ONNX model"):
        pack(tmp_path / "junk.onnx", tmp_path / "pkg")
    with pytest.raises(UserError, match="not a zhisuan package"):
        load_package(tmp_path)


@pytest.mark.slow
def test_zoo_efficientnet_defaults_match_the_zoo_preprocessing(tmp_path: Path) -> None:
    from zhisuan.zoo.data.images import labelled_views
    from zhisuan.zoo.models import efficientnet as eff

    pkg = load_package(pack("efficientnet-lite0", tmp_path / "pkg").path)
    assert pkg.manifest.inputs == (TensorSig("image", "UINT8", (-1, 224, 224, 3)),)
    assert pkg.manifest.metadata["source"]["zoo_model"] == "efficientnet-lite0"
    assert pkg.manifest.metadata["zoo"]["defaults_applied"] == ["preprocess", "postprocess"]
    views = labelled_views(224)[:3]
    pixels = np.stack([v.pixels for v in views]).astype(np.uint8)
    with pkg.open_runner(threads=2) as runner:
        out = pkg.postprocess(runner.run(pkg.preprocess({"image": pixels})))
        reference = runner.run({"image": eff.preprocess(pixels)})["logits"]
    np.testing.assert_allclose(out["logits"], reference, rtol=1e-5, atol=1e-5)
    names = eff.class_names()
    for row, view in zip(out["top5_classes"], views, strict=True):
        assert set(row.tolist()) & set(view.labels)  # the photo's class is in its top 5
    assert out["top5_labels"][0, 0] == names[out["top5_classes"][0, 0]].encode()
    plain = pack("efficientnet-lite0", tmp_path / "plain", zoo_defaults=False)
    assert plain.manifest.inputs == (TensorSig("image", "FP32", (-1, 3, 224, 224)),)
    assert plain.manifest.preprocess == () and plain.manifest.postprocess == ()


def test_onnxruntime_threads_covering_every_core_do_not_spin(tiny: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:

    pack(tiny, tmp_path / "pkg", name="tiny")
    loaded = load_package(tmp_path / "pkg")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    with loaded.open_runner(threads=4) as runner:
        assert runner.info.details["session_config"] == {"session.intra_op.allow_spinning": "0"}
    with loaded.open_runner() as runner:  # the default pool has a thread per core
        assert runner.info.details["session_config"] == {"session.intra_op.allow_spinning": "0"}
    with loaded.open_runner(threads=2) as runner:  # cores left for the server: ORT's default spinning
        assert "session_config" not in runner.info.details


def test_tensor_sigs_are_runtime_tensor_specs_with_v2_datatypes(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    from zhisuan.runtime.base import TensorSpec
    from zhisuan.serve.datatypes import Datatype

    spec = TensorSpec("x", "uint8", ("batch", 224, None, 3))
    sig = TensorSig.from_spec(spec)
    assert sig == TensorSig("x", "UINT8", (-1, 224, -1, 3)) and sig.datatype is Datatype.UINT8
    assert sig.to_spec() == TensorSpec("x", "uint8", (None, 224, None, 3))
    assert TensorSig("s", "BYTES", (-1,)).to_spec().dtype == "object"
    with pytest.raises(UserError, match="unknown datatype"):
        TensorSig("x", "float32", (1,))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, None)],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "s.onnx")
    inputs, outputs, facts = package_mod.read_model_signature(tmp_path / "s.onnx", package_mod.PackageFormat.ONNX)
    assert inputs == [TensorSig("x", "BYTES", (-1,))]
    assert outputs[0].datatype is Datatype.BYTES and len(outputs[0].shape) == 1  # shape inference gave the rank
    assert facts["opsets"] == {"ai.onnx": 17} and facts["external_data"] == []


def test_batching_values_are_bounded() -> None:
    from zhisuan.serve.config import MAX_BATCH_SIZE

    assert BatchingConfig(max_batch_size=MAX_BATCH_SIZE).max_batch_size == MAX_BATCH_SIZE
    for bad in ({"max_batch_size": 10**20}, {"max_batch_size": MAX_BATCH_SIZE + 1},
                {"max_queue_delay_ms": float("inf")}, {"max_queue_delay_ms": float("nan")}):
        with pytest.raises(UserError, match=r"max batch size|max queue delay") as exc:
            BatchingConfig(**bad)
        assert "\n" not in str(exc.value) and len(str(exc.value)) < 200


def test_a_deeply_nested_manifest_is_a_user_error(tmp_path: Path) -> None:
    from zhisuan.errors import UserError
    from zhisuan.inputs import resolve
    from zhisuan.serve.package import load_package

    root = tmp_path / "pkg"
    root.mkdir()
    (root / "manifest.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    for read in (load_package, resolve):
        with pytest.raises(UserError, match="nests deeper"):
            read(root)
