"""compare --layerwise tells the truth (issue 11, points 3, 4 and 8): its verdict and per-output
figures are a plain comparison's; a quantized graph output has its own layer row; the float32
metrics keep float64's figures; the reported phases add up to the wall time."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from compare_graphs import convnet

from zhisuan.compare import AgreementAccumulator, CompareConfig, Tolerance, compare_models
from zhisuan.compare.metrics import _BLOCK

FEEDS = [{"x": np.random.default_rng(s).standard_normal((2, 3, 8, 8)).astype(np.float32)} for s in range(3)]
# Between the two errors this CPU gives: ONNX Runtime's fused U8S8 kernels (the real run) and its
# float simulation of the same QDQ graph when intermediates are exposed.
LOOSE = {"atol": 0.15, "rtol": 0.0, "min_cosine": 0.5}


@pytest.fixture(scope="module")
def qdq_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A float conv net and its static QDQ INT8 copy (ONNX Runtime quantizer; the output is quantized)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([dict(f) for f in FEEDS])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    folder = tmp_path_factory.mktemp("qdq")
    ref, cand = folder / "ref.onnx", folder / "int8.onnx"
    onnx.save(convnet(), str(ref))
    quantize_static(str(ref), str(cand), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return ref, cand


def test_layerwise_verdict_and_outputs_are_the_plain_comparison(qdq_pair: tuple[Path, Path], tmp_path: Path) -> None:
    ref, cand = qdq_pair
    plain = compare_models(ref, cand, CompareConfig(**LOOSE), feeds=FEEDS)
    layerwise = compare_models(ref, cand, CompareConfig(layerwise=True, **LOOSE), feeds=FEEDS)
    assert layerwise.within_tolerance == plain.within_tolerance
    assert [o.to_dict() for o in layerwise.outputs] == [o.to_dict() for o in plain.outputs]
    assert "diagnosis" in layerwise.layers_note and "unmodified" in layerwise.layers_note
    assert plain.layers_note == ""

    data = tmp_path / "x.npz"
    np.savez(data, x=FEEDS[0]["x"])
    want = compare_models(ref, cand, CompareConfig(data=str(data), **LOOSE))
    flags = ["--atol", str(LOOSE["atol"]), "--rtol", "0", "--min-cosine", str(LOOSE["min_cosine"])]
    proc = subprocess.run(
        [sys.executable, "-m", "zhisuan", "compare", str(ref), str(cand), "--data", str(data), "--layerwise", "--json", *flags],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == (0 if want.within_tolerance else 1), proc.stderr
    got = json.loads(proc.stdout)
    assert got["within_tolerance"] == want.within_tolerance
    assert got["outputs"][0]["max_abs_error"] == pytest.approx(want.outputs[0].measurement.metrics.max_abs_error, rel=1e-12)
    assert got["layers_note"].startswith("Layer figures are diagnosis")


def test_quantized_graph_output_is_the_last_layer_row(qdq_pair: tuple[Path, Path]) -> None:
    ref, cand = qdq_pair
    plain = compare_models(ref, cand, CompareConfig(**LOOSE), feeds=FEEDS)
    result = compare_models(ref, cand, CompareConfig(layerwise=True, **LOOSE), feeds=FEEDS)
    last = result.layers[-1]
    assert (last.output, last.ref_tensor, last.op_type) == ("y", "y", "DequantizeLinear")
    # Its total error is the real output's error, quantization of the output included ...
    assert last.total.to_dict() == {**plain.outputs[0].measurement.to_dict(), "top1_agreement": None}
    # ... and its own error is that quantization alone (REF's value through CAND's final Q/DQ).
    model = onnx.load(str(cand))
    producers = {out: node for node in model.graph.node for out in node.output}
    dq = producers["y"]
    q = producers[dq.input[0]]
    assert set(last.segment) == {dq.name, q.name}
    assert 0.0 < last.own.metrics.max_abs_error <= plain.outputs[0].measurement.metrics.max_abs_error
    conv = result.layers[-2]
    assert conv.op_type == "Conv" and conv.ref_tensor == "y" and conv.output == q.input[0]


@pytest.mark.parametrize("layerwise", [False, True])
def test_reported_phases_add_up_to_the_wall_time(qdq_pair: tuple[Path, Path], layerwise: bool) -> None:
    ref, cand = qdq_pair
    started = time.perf_counter()
    result = compare_models(ref, cand, CompareConfig(layerwise=layerwise, random=2))
    wall = time.perf_counter() - started
    phases = dict(result.timings_s)
    total = phases.pop("total")
    expected = {"inputs", "load", "run", "metrics", "close", "other"} | ({"pairing"} if layerwise else set())
    assert set(phases) == expected and all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(total, rel=1e-9)
    assert total <= wall and total == pytest.approx(wall, rel=0.05, abs=0.02)
    assert phases["other"] <= 0.05 * total + 0.02  # every phase that costs is named


def _exact(ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> dict[str, float]:
    """The figures computed directly in float64 (finite data)."""
    a, b = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    diff = np.abs(a - b)
    return {
        "one_minus_cos": 1.0 - float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float((diff / np.maximum(np.abs(a), 1e-6)).max()),
        "violations": int(np.count_nonzero(diff > tol.atol + tol.rtol * np.abs(a))),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("noise", [1e-2, 1e-6])
def test_float32_block_metrics_keep_float64_figures(dtype: type, noise: float) -> None:
    rng = np.random.default_rng(0)
    size = 3 * _BLOCK + 17  # several blocks and a short one
    ref = (rng.standard_normal(size) * 3 + 1).astype(dtype)
    cand = (ref.astype(np.float64) * (1 + noise * rng.standard_normal(size))).astype(dtype)
    tol = Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9)
    acc = AgreementAccumulator(tol)
    for start in (0, size // 2):  # two "samples"
        acc.add(ref[start:start + size // 2], cand[start:start + size // 2])
    both = np.concatenate([ref[: size // 2], ref[size // 2: size // 2 * 2]])
    want = _exact(both, np.concatenate([cand[: size // 2], cand[size // 2: size // 2 * 2]]), tol)
    got = acc.result()
    if want["one_minus_cos"] > 0:
        assert 1.0 - got.cosine == pytest.approx(want["one_minus_cos"], rel=1e-3)
    else:
        assert got.cosine == 1.0
    assert got.max_abs_error == pytest.approx(want["max_abs"], rel=1e-6)
    assert got.mean_abs_error == pytest.approx(want["mean_abs"], rel=1e-5)
    assert got.max_rel_error == pytest.approx(want["max_rel"], rel=1e-5)
    assert acc.violations == pytest.approx(want["violations"], abs=max(2, 1e-5 * size))


def test_nearly_equal_large_tensors_keep_the_cosine_precision() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(4 * _BLOCK).astype(np.float32)
    cand = ref.copy()
    cand[::1000] += np.float32(1e-3)
    acc = AgreementAccumulator()
    acc.add(ref, cand)
    a, b = ref.astype(np.float64), cand.astype(np.float64)
    d = a - b
    # float64 reference: 1 - cos from the same identity, exact enough at this size
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    want = (np.dot(d, d) - (na - nb) ** 2) / (2 * na * nb)
    assert 0 < want < 1e-8
    assert 1.0 - acc.result().cosine == pytest.approx(want, rel=1e-3)


def test_non_finite_and_overflowing_blocks_are_measured_in_float64() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(3 * _BLOCK).astype(np.float32)
    cand = ref + np.float32(1e-3)
    ref[_BLOCK + 5] = cand[_BLOCK + 5] = -np.inf  # equal infinities agree
    acc = AgreementAccumulator(Tolerance(atol=2e-3, rtol=0.0, min_cosine=0.99))
    acc.add(ref, cand)
    assert acc.violations == 0 and acc.within()
    assert acc.result().max_abs_error == pytest.approx(1e-3, rel=1e-3)
    cand[7] = np.nan
    acc.add(ref, cand)
    assert acc.result().max_abs_error == math.inf and acc.violations == 1
    big = np.full(_BLOCK, 3e20, np.float32)  # squares overflow float32
    acc = AgreementAccumulator()
    acc.add(big, big * np.float32(1.000001))
    result = acc.result()
    assert math.isfinite(result.max_abs_error) and result.cosine == pytest.approx(1.0)
    assert result.mean_abs_error == pytest.approx(3e20 * 1e-6, rel=0.1)
