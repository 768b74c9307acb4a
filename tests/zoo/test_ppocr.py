"""PP-OCR zoo entries: decoding, DB boxes and metrics on hand-made data; real models end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zhisuan import zoo
from zhisuan.errors import UserError
from zhisuan.runtime import backend_names
from zhisuan.zoo.data.text_render import FONT_NAMES, random_text
from zhisuan.zoo.models import ppocr
from zhisuan.zoo.models.ppocr import (
    box_iou,
    character_error_rate,
    ctc_greedy_decode,
    db_boxes,
    det_tensor,
    detection_scores,
    levenshtein,
    line_tensor,
    match_boxes,
    normalize_text,
)

# --- text metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("2024-01-05", "2024-01-06", 1),
        ("ab", "ba", 2),
    ],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


def test_cer_is_total_edits_over_total_reference_length() -> None:
    assert character_error_rate(["abc", "de"], ["abd", "de"]) == pytest.approx(1 / 5)
    assert character_error_rate(["hello"], [""]) == 1.0
    assert character_error_rate(["a b"], ["a  b "]) == 0.0  # runs of whitespace compare as one space
    with pytest.raises(UserError):
        character_error_rate([""], ["x"])


def test_normalize_text_collapses_whitespace_runs() -> None:
    assert normalize_text("  Paris,\t March  3 ") == "Paris, March 3"


# --- CTC decoding ---------------------------------------------------------------------------------


def test_ctc_greedy_decode_collapses_repeats_and_drops_blanks() -> None:
    charset = ["<blank>", "a", "b", " "]
    steps = [
        [1, 1, 0, 1, 2, 2, 0, 0],  # "aab": a blank between two a's keeps both
        [0, 2, 2, 3, 3, 1, 0, 0],  # "b a"
    ]
    logits = np.full((2, 8, 4), -5.0, dtype=np.float32)
    for n, row in enumerate(steps):
        logits[n, np.arange(8), row] = 3.0
    logits += np.random.default_rng(0).normal(0, 0.1, logits.shape).astype(np.float32)  # argmax unchanged
    assert ctc_greedy_decode(logits, charset) == ["aab", "b a"]
    assert ctc_greedy_decode(np.zeros((1, 5, 4)) + np.eye(4)[0], charset) == [""]


# --- DB post-processing ---------------------------------------------------------------------------


def test_db_boxes_finds_two_rectangles_and_drops_weak_and_tiny_regions() -> None:
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[10:20, 20:120] = 0.9  # a long line
    prob[50:66, 30:70] = 0.8  # a short, taller one
    prob[80:90, 150:190] = 0.4  # above the 0.3 threshold, below the 0.5 box score
    prob[95:97, 5:7] = 0.95  # too small to be text
    boxes, scores = db_boxes(prob, (200, 400))  # the map is half the image's size
    assert len(boxes) == 2
    boxes = boxes[np.argsort(boxes[:, 1])]
    for box, (y0, y1, x0, x1) in zip(boxes, [(10, 20, 20, 120), (50, 66, 30, 70)], strict=True):
        # unclip distance of a w x h rectangle: w * h * 1.6 / (2 (w + h)), then scaled by 2
        w, h = x1 - x0, y1 - y0
        d = w * h * 1.6 / (2 * (w + h))
        expected = np.array([x0 - d, y0 - d, x1 + d, y1 + d]) * 2
        np.testing.assert_allclose(box, expected, atol=4.0)
    assert np.all(scores >= 0.5)
    empty, empty_scores = db_boxes(np.zeros((32, 32)), (32, 32))
    assert empty.shape == (0, 4) and empty_scores.shape == (0,)


def test_det_tensor_scales_the_short_side_to_736_in_multiples_of_32() -> None:
    image = np.full((600, 900, 3), 255, dtype=np.uint8)
    x = det_tensor(image)
    assert x.shape[:2] == (1, 3) and x.dtype == np.float32
    assert x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0
    assert x.shape[2] == 736 and x.shape[3] == 1088  # 900 * 736 / 600 = 1104 -> int 1104 -> round(34.5) * 32
    np.testing.assert_allclose(x, 1.0, atol=1e-6)  # white with mean 0.5, std 0.5


def test_line_tensor_keeps_aspect_and_pads_right_with_zero() -> None:
    image = np.zeros((24, 60, 3), dtype=np.uint8)
    image[:, :, 0] = 255  # red in RGB -> last channel in BGR
    x = line_tensor(image, 48, 320)
    assert x.shape == (3, 48, 320)
    np.testing.assert_allclose(x[2, :, :120], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[0, :, :120], -1.0, atol=1e-6)
    assert (x[:, :, 120:] == 0).all()


# --- box matching ---------------------------------------------------------------------------------


def test_box_iou_on_hand_made_boxes() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_match_boxes_is_one_to_one_at_iou_half() -> None:
    gt = np.array([[0, 0, 100, 20], [0, 40, 100, 60], [0, 80, 100, 100]])
    det = np.array(
        [
            [2, 1, 101, 21],  # matches gt 0
            [0, 0, 100, 20],  # duplicate of gt 0: a false positive
            [0, 40, 100, 60],  # matches gt 1
            [0, 80, 49, 100],  # IoU 0.49 with gt 2: not a match
        ]
    )
    assert match_boxes(gt, det) == 2
    scores = detection_scores(2, gt_count=3, det_count=4)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["hmean"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert match_boxes(gt, np.zeros((0, 4))) == 0
    assert detection_scores(0, 3, 0) == {"precision": 0.0, "recall": 0.0, "hmean": 0.0}


# --- entries and charset --------------------------------------------------------------------------


def test_entries_are_registered_with_their_sources() -> None:
    for name, metric in [("ppocr-rec", "exact_match"), ("ppocr-det", "hmean"), ("ppocr-cls", "accuracy")]:
        entry = zoo.get(name)
        data = entry.to_dict()
        assert data["kind"] == "onnx-shipped" and data["license"] == "Apache-2.0"
        assert data["metric"] == metric and data["source"]["package"] == "rapidocr"
        assert data["metadata"]["fonts"] == list(FONT_NAMES)
        assert entry.default_eval_samples >= 30
        assert entry.weights is not None and entry.weights.path().is_file()  # sha256 verified


def test_rec_charset_follows_rapidocr_and_matches_the_model_output() -> None:
    charset = ppocr.rec_charset()
    assert charset[0] == "<blank>" and charset[-1] == " "
    assert len(charset) == ppocr.REC_CHARSET_SIZE == zoo.get("ppocr-rec").metadata["charset_size"]
    model = onnx.load(str(ppocr.REC_WEIGHTS.path()), load_external_data=False)
    assert model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value == len(charset)
    # every character the text generator can draw is one the model can emit
    rng = np.random.default_rng(0)
    drawn = set("".join(random_text(rng) for _ in range(2000)))
    assert drawn <= set(charset)


def _write_identity_model(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("name", ["ppocr-rec", "ppocr-cls"])
def test_a_model_with_the_wrong_signature_is_a_user_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "identity.onnx"
    _write_identity_model(path)
    with pytest.raises(UserError, match=f"not a {name} model"):
        zoo.evaluate(name, model=path, samples=4)


def test_an_unconvertible_opset_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot convert"):
        zoo.export("ppocr-cls", opset=99)


# --- real models, end to end ----------------------------------------------------------------------


@pytest.mark.slow
def test_rec_reads_clean_printed_lines() -> None:
    progress: list[str] = []
    result = zoo.evaluate("ppocr-rec", samples=30, progress=progress.append)
    # measured 1.0 (30 and 100 lines, seed 0) and 0.994 (500 lines, seed 1)
    assert result.metric == "exact_match" and result.samples == 30
    assert result.value >= 0.9
    assert result.secondary["cer"] < 0.02
    assert any("30/30" in line for line in progress)


@pytest.mark.slow
def test_rec_scores_a_copy_of_its_model_file_the_same(tmp_path: Path) -> None:
    copy = tmp_path / "rec-copy.onnx"
    shutil.copyfile(zoo.export("ppocr-rec").path, copy)
    original = zoo.evaluate("ppocr-rec", samples=30)
    copied = zoo.evaluate("ppocr-rec", model=copy, samples=30)
    assert copied.value == original.value and copied.secondary == original.secondary
    assert copied.model_path == str(copy)


@pytest.mark.slow
def test_det_finds_the_rendered_lines() -> None:
    result = zoo.evaluate("ppocr-det", samples=8)
    # measured hmean 1.0 (30 pages, seed 0) and 0.993 (100 pages, seed 1)
    assert result.metric == "hmean" and result.samples == 8
    assert result.value >= 0.9
    assert result.secondary["precision"] >= 0.9 and result.secondary["recall"] >= 0.9


@pytest.mark.slow
def test_cls_tells_upright_from_upside_down_and_survives_an_opset_upgrade() -> None:
    result = zoo.evaluate("ppocr-cls", samples=60)
    # measured 0.97 (100 lines, seed 0) and 0.984 (500 lines, seed 1)
    assert result.metric == "accuracy" and result.value >= 0.9
    upgraded = zoo.export("ppocr-cls", opset=13)
    converted = onnx.load(str(upgraded.path))
    assert {o.domain: o.version for o in converted.opset_import}[""] == 13
    assert zoo.evaluate("ppocr-cls", model=upgraded.path, samples=60).value == pytest.approx(
        result.value, abs=0.02
    )


@pytest.mark.slow
@pytest.mark.skipif("openvino" not in backend_names(), reason="no OpenVINO backend in zhisuan.runtime yet")
def test_cls_scores_the_same_on_openvino() -> None:
    onnxruntime = zoo.evaluate("ppocr-cls", samples=40)
    openvino = zoo.evaluate("ppocr-cls", samples=40, runtime="openvino")
    assert openvino.value == pytest.approx(onnxruntime.value, abs=0.03)


@pytest.mark.slow
def test_cli_eval_prints_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zhisuan", "zoo", "eval", "ppocr-cls", "--samples", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["metric"] == "accuracy" and data["samples"] == 20
    assert 0.8 <= data["value"] <= 1.0
    assert data["runtime"]["runtime"] == "onnxruntime"
