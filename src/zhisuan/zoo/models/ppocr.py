"""PP-OCR text recognition, detection and direction classification, as shipped by ``rapidocr``.

The ONNX files come from the ``rapidocr`` wheel (opset 11, Apache-2.0), pinned by sha256. Pre- and
post-processing follow rapidocr 3.10 (``ch_ppocr_rec``, ``ch_ppocr_det``, ``ch_ppocr_cls``) without
OpenCV: Pillow resizes, scipy labels connected components. The evaluation sets are printed text
rendered here from a seed (:mod:`zhisuan.zoo.data.text_render`).

>>> from zhisuan.zoo.models.ppocr import ctc_greedy_decode, levenshtein
>>> probs = np.eye(4)[[1, 1, 0, 1, 2, 2, 0]]   # classes: blank, "a", "b", " "
>>> ctc_greedy_decode(probs[None], ["<blank>", "a", "b", " "])
['aab']
>>> levenshtein("kitten", "sitting")
3
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.zoo.base import (
    BuildOptions,
    EvalOptions,
    EvalResult,
    Feed,
    ServingDefaults,
    Split,
    WeightsFile,
    ZooEntry,
)
from zhisuan.zoo.data.text_render import FONT_NAMES

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime, TensorSpec

_HINT = "pip install --no-deps rapidocr==3.10.0"
_SHIPPED_OPSET = 11

REC_WEIGHTS = WeightsFile(
    distribution="rapidocr",
    module="rapidocr",
    relpath="models/PP-OCRv6_rec_small.onnx",
    sha256="6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    install_hint=_HINT,
)
DET_WEIGHTS = WeightsFile(
    distribution="rapidocr",
    module="rapidocr",
    relpath="models/PP-OCRv6_det_small.onnx",
    sha256="090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    install_hint=_HINT,
)
CLS_WEIGHTS = WeightsFile(
    distribution="rapidocr",
    module="rapidocr",
    relpath="models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    install_hint=_HINT,
)

# rapidocr config.yaml (3.10): Rec rec_img_shape, Det limit/mean/std/DB, Cls cls_image_shape/labels
REC_HEIGHT, REC_MIN_WIDTH = 48, 320
REC_BATCH = 8
DET_LIMIT_SIDE = 736  # limit_type "min": the shorter side is scaled up to at least this
DET_MEAN = (0.5, 0.5, 0.5)
DET_STD = (0.5, 0.5, 0.5)
DB_THRESH, DB_BOX_THRESH, DB_UNCLIP_RATIO, DB_MIN_SIZE, DB_MAX_CANDIDATES = 0.3, 0.5, 1.6, 3, 1000
CLS_HEIGHT, CLS_WIDTH = 48, 192
CLS_LABELS = ("0", "180")
CLS_BATCH = 16
IOU_THRESHOLD = 0.5
REC_CHARSET_SIZE = 18710  # metadata `character` (18,708 lines) + CTC blank + space


# --- build ----------------------------------------------------------------------------------------


def _builder(weights: WeightsFile) -> Callable[[Path, BuildOptions, Progress], None]:
    def build(out: Path, options: BuildOptions, progress: Progress) -> None:
        source = weights.path()  # verifies the sha256
        if options.opset is None or options.opset == _SHIPPED_OPSET:
            shutil.copyfile(source, out)
            return
        import onnx
        from onnx import version_converter

        progress(f"converting {Path(weights.relpath).name} from opset {_SHIPPED_OPSET} to {options.opset}")
        model = onnx.load(str(source))
        try:
            converted = version_converter.convert_version(model, options.opset)
        except Exception as exc:  # the converter raises plain RuntimeError/ValueError subclasses
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"cannot convert {Path(weights.relpath).name} from opset {_SHIPPED_OPSET} to {options.opset}: {first}"
            ) from None
        onnx.save(converted, str(out))

    return build


# --- shared helpers -------------------------------------------------------------------------------


def _io(rt: Runtime, model: str, *, output_rank: int, classes: int | None = None) -> tuple[TensorSpec, str]:
    """The image input and the first output, after checking they look like this model's."""
    inputs, outputs = rt.inputs(), rt.outputs()
    problem = None
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        problem = "one input N x 3 x H x W"
    elif isinstance(inputs[0].shape[1], int) and inputs[0].shape[1] not in (-1, 3):
        problem = "an input with 3 channels"
    elif inputs[0].dtype not in ("float32", "float16"):
        problem = "a float32 or float16 input"
    elif not outputs or len(outputs[0].shape) != output_rank:
        problem = f"an output of rank {output_rank}"
    elif (
        classes is not None
        and isinstance(outputs[0].shape[-1], int)
        and outputs[0].shape[-1] not in (-1, classes)
    ):
        problem = f"an output with {classes} classes in its last axis"
    if problem:
        got_in = ", ".join(f"{s.name} {s.dtype} {list(s.shape)}" for s in inputs)
        got_out = ", ".join(f"{s.name} {s.dtype} {list(s.shape)}" for s in outputs)
        raise UserError(
            f"this is not a {model} model: expected {problem}; it has inputs [{got_in}], outputs [{got_out}]"
        )
    return inputs[0], outputs[0].name


def _run(rt: Runtime, spec: TensorSpec, output: str, batch: np.ndarray) -> np.ndarray:
    return np.asarray(rt.run({spec.name: batch.astype(spec.dtype)}, [output])[output], dtype=np.float32)


def _resize_chw(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB uint8 ``H x W x 3`` -> BGR float32 ``3 x height x width`` in 0..255 (rapidocr reads images as BGR)."""
    from PIL import Image

    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)


def line_tensor(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's ``resize_norm_img``: keep the aspect ratio at ``height``, scale to -1..1, pad right with 0."""
    h, w = image.shape[:2]
    resized_w = min(width, math.ceil(height * w / h))
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = _resize_chw(image, resized_w, height) / 255.0 * 2.0 - 1.0
    return out


# --- recognition ----------------------------------------------------------------------------------


@cache
def rec_charset() -> tuple[str, ...]:
    """The recogniser's classes: CTC blank, the model's metadata ``character`` lines, then a space."""
    import onnx

    model = onnx.load(str(REC_WEIGHTS.path()), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise UserError(f"{REC_WEIGHTS.relpath} has no `character` metadata; cannot decode its output")
    # rapidocr: session metadata .splitlines(), then insert " " at the end and "blank" at 0
    return ("<blank>", *meta["character"].splitlines(), " ")


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str]) -> list[str]:
    """Best-path CTC decoding of ``N x T x C`` scores: argmax, collapse repeats, drop blanks (class 0)."""
    best = np.asarray(probs).argmax(axis=2)
    texts = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        texts.append("".join(charset[i] for i in row[keep]))
    return texts


def normalize_text(text: str) -> str:
    """Compare text as printed: runs of whitespace are one space, none at either end."""
    return re.sub(r"\s+", " ", text).strip()


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Edit distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER: total edit distance over total reference length (after :func:`normalize_text`)."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    total = sum(len(r) for r in refs)
    if total == 0:
        raise UserError("character error rate needs at least one non-empty reference")
    return sum(levenshtein(r, h) for r, h in zip(refs, hyps, strict=True)) / total


def recognize(rt: Runtime, images: Sequence[np.ndarray], *, progress: Progress = no_progress) -> list[str]:
    """Text of each line image (RGB uint8), batched as rapidocr does: sorted by aspect ratio, padded to the widest."""
    spec, output = _io(rt, "ppocr-rec", output_rank=3)
    charset = rec_charset()
    classes = rt.outputs()[0].shape[-1]
    if isinstance(classes, int) and classes > 0 and classes != len(charset):
        raise UserError(f"the model outputs {classes} classes but the PP-OCR charset has {len(charset)}")
    ratios = np.array([img.shape[1] / img.shape[0] for img in images])
    order = np.argsort(ratios, kind="stable")
    texts = [""] * len(images)
    for start in range(0, len(images), REC_BATCH):
        idx = order[start : start + REC_BATCH]
        max_ratio = max(REC_MIN_WIDTH / REC_HEIGHT, float(ratios[idx].max()))
        width = int(REC_HEIGHT * max_ratio)
        batch = np.stack([line_tensor(images[i], REC_HEIGHT, width) for i in idx])
        probs = _run(rt, spec, output, batch)
        if probs.shape[-1] != len(charset):
            raise UserError(
                f"the model outputs {probs.shape[-1]} classes but the PP-OCR charset has {len(charset)}"
            )
        for i, text in zip(idx, ctc_greedy_decode(probs, charset), strict=True):
            texts[i] = text
        progress(f"ppocr-rec: recognised {min(start + REC_BATCH, len(images))}/{len(images)} lines")
    return texts


def _evaluate_rec(rt: Runtime, options: EvalOptions) -> EvalResult:
    from zhisuan.zoo.data.text_render import text_lines

    n = options.samples or REC_ENTRY.default_eval_samples
    options.progress(f"ppocr-rec: rendering {n} text lines")
    lines = text_lines(n, options.seed)
    texts = recognize(rt, [line.image for line in lines], progress=options.progress)
    refs = [line.text for line in lines]
    exact = sum(normalize_text(r) == normalize_text(h) for r, h in zip(refs, texts, strict=True))
    return EvalResult(
        model="ppocr-rec",
        metric="exact_match",
        value=exact / n,
        samples=n,
        secondary={"cer": character_error_rate(refs, texts)},
    )


# --- detection ------------------------------------------------------------------------------------


def det_tensor(image: np.ndarray, *, limit_side: int = DET_LIMIT_SIDE) -> np.ndarray:
    """rapidocr's ``DetPreProcess`` (limit_type "min"): scale up so the short side is >= ``limit_side``,
    round both sides to multiples of 32, normalise with the configured mean/std. Returns ``1 x 3 x H x W``.
    """
    h, w = image.shape[:2]
    ratio = limit_side / min(h, w) if min(h, w) < limit_side else 1.0
    new_h = max(32, round(int(h * ratio) / 32) * 32)
    new_w = max(32, round(int(w * ratio) / 32) * 32)
    chw = _resize_chw(image, new_w, new_h) / 255.0
    mean = np.array(DET_MEAN, dtype=np.float32).reshape(3, 1, 1)  # per channel of the BGR image, as rapidocr
    std = np.array(DET_STD, dtype=np.float32).reshape(3, 1, 1)
    return ((chw - mean) / std)[None].astype(np.float32)


def db_boxes(
    prob: np.ndarray,
    image_shape: tuple[int, int],
    *,
    thresh: float = DB_THRESH,
    box_thresh: float = DB_BOX_THRESH,
    unclip_ratio: float = DB_UNCLIP_RATIO,
) -> tuple[np.ndarray, np.ndarray]:
    """DB post-processing of an ``H x W`` probability map into axis-aligned boxes on the original image.

    As rapidocr's ``DBPostProcess`` (threshold, 2x2 dilation, one candidate per region, "fast" mean
    score, unclip by ``area * ratio / perimeter``, scale back), with the minimum-area rectangle of a
    region replaced by its bounding box and the polygon offset by the exact offset of a rectangle
    (text rendered here is never rotated). Returns ``(boxes N x 4 as x0, y0, x1, y1, scores N)``.
    """
    from scipy import ndimage

    prob = np.asarray(prob, dtype=np.float32)
    height, width = prob.shape
    dest_h, dest_w = image_shape
    mask = ndimage.binary_dilation(prob > thresh, structure=np.ones((2, 2), dtype=bool))
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))  # 8-connected, like contours
    boxes, scores = [], []
    for region in ndimage.find_objects(labels)[:DB_MAX_CANDIDATES]:
        if region is None:
            continue
        ys, xs = region
        x0, x1, y0, y1 = xs.start, xs.stop - 1, ys.start, ys.stop - 1  # contour points are pixel centres
        w, h = x1 - x0, y1 - y0
        if min(w, h) < DB_MIN_SIZE:
            continue
        score = float(prob[y0 : y1 + 1, x0 : x1 + 1].mean())
        if score < box_thresh:
            continue
        distance = w * h * unclip_ratio / (2.0 * (w + h))
        if min(w, h) + 2 * distance < DB_MIN_SIZE + 2:
            continue
        box = np.array([x0 - distance, y0 - distance, x1 + distance, y1 + distance])
        box[[0, 2]] = np.clip(np.round(box[[0, 2]] / width * dest_w), 0, dest_w)
        box[[1, 3]] = np.clip(np.round(box[[1, 3]] / height * dest_h), 0, dest_h)
        if box[2] - box[0] <= 3 or box[3] - box[1] <= 3:
            continue
        boxes.append(box)
        scores.append(score)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores, dtype=np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N x 4) with every box of ``b`` (M x 4), boxes as x0, y0, x1, y1."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(gt: np.ndarray, det: np.ndarray, *, iou_threshold: float = IOU_THRESHOLD) -> int:
    """ICDAR-style one-to-one matching: pairs taken by decreasing IoU, each box used once. Returns the matches."""
    iou = box_iou(gt, det)
    if iou.size == 0:
        return 0
    used_gt, used_det, matches = set(), set(), 0
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        g, d = divmod(int(flat), iou.shape[1])
        if iou[g, d] < iou_threshold:
            break
        if g in used_gt or d in used_det:
            continue
        used_gt.add(g)
        used_det.add(d)
        matches += 1
    return matches


def detection_scores(matches: int, gt_count: int, det_count: int) -> dict[str, float]:
    """Precision, recall and their harmonic mean over a whole set (ICDAR sums counts over images)."""
    precision = matches / det_count if det_count else 0.0
    recall = matches / gt_count if gt_count else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "hmean": hmean}


def detect(rt: Runtime, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text boxes (x0, y0, x1, y1 on ``image``) and their scores."""
    spec, output = _io(rt, "ppocr-det", output_rank=4)
    prob = _run(rt, spec, output, det_tensor(image))
    if prob.ndim != 4 or prob.shape[:2] != (1, 1):
        raise UserError(f"ppocr-det should output a 1 x 1 x H x W probability map, got {list(prob.shape)}")
    return db_boxes(prob[0, 0], image.shape[:2])


def _evaluate_det(rt: Runtime, options: EvalOptions) -> EvalResult:
    from zhisuan.zoo.data.text_render import text_pages

    n = options.samples or DET_ENTRY.default_eval_samples
    options.progress(f"ppocr-det: rendering {n} pages")
    pages = text_pages(n, options.seed)
    matches = gt_count = det_count = 0
    for i, page in enumerate(pages, 1):
        boxes, _ = detect(rt, page.image)
        matches += match_boxes(page.boxes, boxes)
        gt_count += len(page.boxes)
        det_count += len(boxes)
        options.progress(f"ppocr-det: detected {i}/{n} pages")
    scores = detection_scores(matches, gt_count, det_count)
    return EvalResult(
        model="ppocr-det",
        metric="hmean",
        value=scores["hmean"],
        samples=n,
        secondary={
            "precision": scores["precision"],
            "recall": scores["recall"],
            "gt_boxes": float(gt_count),
            "detected_boxes": float(det_count),
        },
    )


# --- direction classification ---------------------------------------------------------------------


def classify(rt: Runtime, images: Sequence[np.ndarray], *, progress: Progress = no_progress) -> list[str]:
    """Orientation label ("0" or "180") of each line image (RGB uint8)."""
    spec, output = _io(rt, "ppocr-cls", output_rank=2, classes=len(CLS_LABELS))
    labels: list[str] = []
    for start in range(0, len(images), CLS_BATCH):
        batch = np.stack(
            [line_tensor(img, CLS_HEIGHT, CLS_WIDTH) for img in images[start : start + CLS_BATCH]]
        )
        probs = _run(rt, spec, output, batch)
        if probs.ndim != 2 or probs.shape[1] != len(CLS_LABELS):
            raise UserError(f"ppocr-cls should output N x {len(CLS_LABELS)} scores, got {list(probs.shape)}")
        labels.extend(CLS_LABELS[int(k)] for k in probs.argmax(axis=1))
        progress(f"ppocr-cls: classified {min(start + CLS_BATCH, len(images))}/{len(images)} lines")
    return labels


def _evaluate_cls(rt: Runtime, options: EvalOptions) -> EvalResult:
    from zhisuan.zoo.data.text_render import text_lines

    n = options.samples or CLS_ENTRY.default_eval_samples
    options.progress(f"ppocr-cls: rendering {n} text lines")
    truth = [CLS_LABELS[i % 2] for i in range(n)]  # every second line is upside down
    images = [
        line.image[::-1, ::-1] if label == "180" else line.image
        for line, label in zip(text_lines(n, options.seed), truth, strict=True)
    ]
    predicted = classify(rt, [np.ascontiguousarray(img) for img in images], progress=options.progress)
    correct = [p == t for p, t in zip(predicted, truth, strict=True)]
    upright = [c for c, t in zip(correct, truth, strict=True) if t == "0"]
    flipped = [c for c, t in zip(correct, truth, strict=True) if t == "180"]
    secondary = {"accuracy_0": sum(upright) / len(upright)}
    if flipped:
        secondary["accuracy_180"] = sum(flipped) / len(flipped)
    return EvalResult(
        model="ppocr-cls", metric="accuracy", value=sum(correct) / n, samples=n, secondary=secondary
    )


# --- entries --------------------------------------------------------------------------------------

_FONTS = ", ".join(FONT_NAMES)
_LINES = (
    "clean printed text lines rendered with Pillow from the seed: English words, numbers, dates, "
    "times, prices and punctuation (Latin only: no CJK font ships in an installed package), "
    f"2–6 tokens, in {len(FONT_NAMES)} DejaVu faces from matplotlib ({_FONTS}) at 16–40 px, "
    "cropped to the ink with 10–50% padding, dark ink on light tinted paper"
)

def _line_feeds(count: int, seed: int, height: int, width: int | None, *, flip: bool) -> list[Feed]:
    """Rendered lines as the evaluators batch them: sorted by aspect ratio, batches of REC_BATCH,
    padded to the batch's widest line (``width`` None) or to a fixed width."""
    from zhisuan.zoo.data.text_render import text_lines

    lines = [line.image for line in text_lines(count, seed)]
    if flip:  # the classifier sees both orientations, as in its evaluation set
        lines = [np.ascontiguousarray(img[::-1, ::-1]) if i % 2 else img for i, img in enumerate(lines)]
    ratios = np.array([img.shape[1] / img.shape[0] for img in lines])
    order = np.argsort(ratios, kind="stable")
    feeds = []
    for start in range(0, count, REC_BATCH):
        idx = order[start : start + REC_BATCH]
        w = width or int(height * max(REC_MIN_WIDTH / height, float(ratios[idx].max())))
        x = np.stack([line_tensor(lines[i], height, w) for i in idx])
        feeds.append({"x": x.astype(np.float32)})
    return feeds


def _rec_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    """Rendered text lines (the evaluation set is the same renderer: ``seed`` picks the lines)."""
    return _line_feeds(batches * REC_BATCH, seed, REC_HEIGHT, None, flip=False)


def _cls_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    return _line_feeds(batches * REC_BATCH, seed, CLS_HEIGHT, CLS_WIDTH, flip=True)


def _det_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    """Rendered pages, one per feed (at least two, so calibration sees more than one layout)."""
    from zhisuan.zoo.data.text_render import text_pages

    return [{"x": det_tensor(page.image)} for page in text_pages(max(2, batches // 2), seed)]


def _cls_serving(model_inputs: Sequence[object], model_outputs: Sequence[object]) -> ServingDefaults:
    """The orientation label next to the scores."""
    (scores,) = [s.name for s in model_outputs]  # type: ignore[attr-defined]
    post = (
        {"op": "argmax", "output": scores, "axis": -1, "as": "orientation_class"},
        {"op": "labels", "output": "orientation_class", "labels": list(CLS_LABELS), "as": "orientation"},
    )
    return ServingDefaults(postprocess=post)


REC_ENTRY = ZooEntry(
    name="ppocr-rec",
    task="text recognition (OCR)",
    summary="PP-OCRv6 small text-line recogniser (CTC, 18,710 classes), from rapidocr",
    kind="onnx-shipped",
    license="Apache-2.0",
    weights=REC_WEIGHTS,
    preprocess=(
        "RGB line -> BGR; resize to height 48 keeping the aspect ratio (bilinear); scale (x/255-0.5)/0.5; "
        "pad right with 0 to the batch's widest line (at least 320 px); lines sorted by aspect ratio, batches of 8"
    ),
    postprocess=(
        "CTC greedy decoding: argmax per time step, collapse repeats, drop the blank (class 0); classes are "
        "the blank, the model's metadata `character` lines, and a space"
    ),
    metric="exact_match",
    metric_description=(
        "fraction of lines whose decoded text equals the rendered text after collapsing runs of whitespace; "
        "secondary cer: total Levenshtein distance / total reference characters"
    ),
    eval_set=_LINES,
    default_eval_samples=100,
    build=_builder(REC_WEIGHTS),
    evaluate=_evaluate_rec,
    inputs=_rec_inputs,
    architecture_source="PaddleOCR PP-OCRv6 (exported to ONNX by RapidOCR)",
    metadata={
        "charset_size": REC_CHARSET_SIZE,
        "charset_source": "ONNX metadata_props `character` + CTC blank + space",
        "input": "x: N x 3 x 48 x W float32",
        "fonts": list(FONT_NAMES),
        "opset": _SHIPPED_OPSET,
    },
)

DET_ENTRY = ZooEntry(
    name="ppocr-det",
    task="text detection (OCR)",
    summary="PP-OCRv6 small DB text detector, from rapidocr",
    kind="onnx-shipped",
    license="Apache-2.0",
    weights=DET_WEIGHTS,
    preprocess=(
        f"RGB page -> BGR; scale so the shorter side is at least {DET_LIMIT_SIDE} (limit_type min), both sides "
        f"rounded to multiples of 32 (bilinear); (x/255 - mean)/std with mean {list(DET_MEAN)}, std {list(DET_STD)} "
        "as rapidocr 3.10 configures this model"
    ),
    postprocess=(
        f"DB: probability > {DB_THRESH}, 2x2 dilation, 8-connected regions (scipy.ndimage.label), "
        f"region boxes with mean probability >= {DB_BOX_THRESH}, expanded by area*{DB_UNCLIP_RATIO}/perimeter "
        "(exact for axis-aligned rectangles), scaled back to the page"
    ),
    metric="hmean",
    metric_description=(
        f"F1 of precision and recall of line boxes at IoU >= {IOU_THRESHOLD}, one-to-one matching by "
        "decreasing IoU, counts summed over all pages (ICDAR style)"
    ),
    eval_set=(
        "pages 720–960 x 560–736 px rendered from the seed, 3–8 lines each at known positions "
        f"(same text generator, {len(FONT_NAMES)} DejaVu faces, 18–40 px), light tinted paper with "
        "Gaussian noise (sigma 0–6); ground truth is Pillow's textbbox of each line"
    ),
    default_eval_samples=30,
    build=_builder(DET_WEIGHTS),
    evaluate=_evaluate_det,
    inputs=_det_inputs,
    architecture_source="PaddleOCR PP-OCRv6 (exported to ONNX by RapidOCR)",
    metadata={
        "input": "x: N x 3 x H x W float32 (H, W multiples of 32)",
        "fonts": list(FONT_NAMES),
        "opset": _SHIPPED_OPSET,
    },
)

CLS_ENTRY = ZooEntry(
    name="ppocr-cls",
    task="text direction classification (OCR)",
    summary="PP-OCR mobile v2.0 text-line orientation classifier (0 / 180 degrees), from rapidocr",
    kind="onnx-shipped",
    license="Apache-2.0",
    weights=CLS_WEIGHTS,
    preprocess=(
        f"RGB line -> BGR; resize to height {CLS_HEIGHT} keeping the aspect ratio, width at most {CLS_WIDTH} "
        f"(bilinear); scale (x/255-0.5)/0.5; pad right with 0 to {CLS_WIDTH}; batches of {CLS_BATCH}"
    ),
    postprocess=f"argmax of the two scores -> label {list(CLS_LABELS)}",
    metric="accuracy",
    metric_description="fraction of lines whose orientation (0 or 180 degrees) is classified correctly",
    eval_set=f"the ppocr-rec lines ({_LINES}); every second line rotated by 180 degrees",
    default_eval_samples=100,
    build=_builder(CLS_WEIGHTS),
    evaluate=_evaluate_cls,
    inputs=_cls_inputs,
    serving=_cls_serving,
    quick=True,
    architecture_source="PaddleOCR ch_ppocr_mobile_v2.0_cls (exported to ONNX by RapidOCR)",
    metadata={
        "input": f"x: N x 3 x {CLS_HEIGHT} x {CLS_WIDTH} float32",
        "labels": list(CLS_LABELS),
        "fonts": list(FONT_NAMES),
        "opset": _SHIPPED_OPSET,
    },
)

ENTRIES: list[ZooEntry] = [REC_ENTRY, DET_ENTRY, CLS_ENTRY]
