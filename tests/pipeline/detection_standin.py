"""A stand-in for ``zhisuan.zoo.data.detection`` (hv-det's module) while it has not landed.

Tests call :func:`install` (through a fixture); it does nothing when the real module exists, so
once it is merged every pipeline test runs on the zoo's own letterbox and NMS. Same API as the
shared design: ``letterbox``, ``unletterbox``, ``nms_detections``, ``COCO_NAMES``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODULE = "zhisuan.zoo.data.detection"

COCO_NAMES = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class LetterboxInfo:
    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int
    size: int


def letterbox(image_rgb_uint8: np.ndarray, size: int = 416) -> tuple[np.ndarray, LetterboxInfo]:
    from PIL import Image

    height, width = image_rgb_uint8.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(Image.fromarray(image_rgb_uint8).resize((new_w, new_h), Image.Resampling.BILINEAR))
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    out = np.full((3, size, size), 0.5, dtype=np.float32)
    out[:, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = np.moveaxis(resized, -1, 0).astype(np.float32) / 255.0
    return out, LetterboxInfo(scale, pad_x, pad_y, width, height, size)


def unletterbox(boxes_xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    pad = np.array([info.pad_x, info.pad_y, info.pad_x, info.pad_y], dtype=np.float32)
    out = (np.asarray(boxes_xyxy, dtype=np.float32) - pad) / np.float32(info.scale)
    return np.clip(out, 0.0, np.array([info.width, info.height, info.width, info.height], dtype=np.float32))


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(others[:, 2:] - others[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms_detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = 0.25, iou: float = 0.45,
                   classes: Sequence[int] | None = None, max_det: int = 300
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cls = scores.argmax(axis=1)
    conf = scores[np.arange(len(scores)), cls]
    keep = conf > score_threshold
    if classes is not None:
        keep &= np.isin(cls, np.asarray(list(classes)))
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-conf[idx], kind="stable")]
    chosen: list[int] = []
    for i in idx:
        same = [j for j in chosen if cls[j] == cls[i]]
        if same and (_iou(boxes[i], boxes[same]) > iou).any():
            continue
        chosen.append(int(i))
        if len(chosen) >= max_det:
            break
    sel = np.array(chosen, dtype=np.int64)
    return boxes[sel].reshape(-1, 4), conf[sel], cls[sel]


def install() -> types.ModuleType | None:
    """Put this module in ``sys.modules`` as the zoo's, unless the real one exists; returns it (or None)."""
    try:
        real = importlib.util.find_spec(MODULE)
    except ImportError:
        real = None
    if real is not None:
        return None
    spec = importlib.util.spec_from_file_location(MODULE, Path(__file__))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module  # before running it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def uninstall(module: types.ModuleType | None) -> None:
    if module is not None and sys.modules.get(MODULE) is module:
        del sys.modules[MODULE]
