"""The detector stages: preprocess (letterbox), infer (any runtime backend), postprocess (NMS, boxes
back in frame pixels, as ``supervision.Detections``).

The model contract (docs/video.md): input ``images`` float32 ``[N, 3, S, S]`` (RGB, 0..1,
letterboxed with 0.5 grey), outputs ``boxes`` float32 ``[N, K, 4]`` (xyxy in input pixels) and
``scores`` float32 ``[N, K, C]``. Letterboxing and NMS are the zoo's own
(:mod:`zhisuan.zoo.data.detection`), so the pipeline and the zoo's mAP evaluation agree.

The model is what every command takes (a zoo name, an ONNX or OpenVINO file, a ``zhisuan pack``
directory), resolved by :func:`zhisuan.inputs.resolve`, and runs through
:func:`zhisuan.runtime.load_runtime` on any backend (``null`` in tests).

>>> det = Detector("yolov3-tiny", runtime="onnxruntime").open()  # doctest: +SKIP
>>> chw, info = det.preprocess(frame.image)                      # doctest: +SKIP
>>> boxes, scores = det.infer(np.stack([chw]))                   # doctest: +SKIP
>>> det.postprocess(boxes[0], scores[0], info, frame.size_wh)     # doctest: +SKIP
Detections(xyxy=array([[...]]), class_id=array([2]), ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zhisuan.errors import UserError
from zhisuan.pipeline.spec import DetectSpec

if TYPE_CHECKING:
    import supervision as sv

    from zhisuan.runtime.base import Runtime, RuntimeInfo

__all__ = ["Detector", "detection_tools"]

#: Input size when the model's input has dynamic height and width.
DEFAULT_SIZE = 416


def detection_tools() -> Any:
    """The zoo's detection helpers (letterbox, unletterbox, nms_detections, COCO_NAMES)."""
    try:
        from zhisuan.zoo.data import detection
    except ImportError as exc:
        raise UserError(f"the detector stages need zhisuan.zoo.data.detection, which this build lacks ({exc})") from None
    return detection


class Detector:
    """A detection model on a runtime, with its pre- and post-processing.

    ``loaded``: an already loaded :class:`~zhisuan.runtime.base.Runtime` to use instead of loading
    ``model`` (a served model, or a test's scripted runtime).
    """

    def __init__(self, model: str | Path = "yolov3-tiny", *, runtime: str = "onnxruntime", device: str = "cpu",
                 threads: int | None = None, detect: DetectSpec | None = None, loaded: Runtime | None = None) -> None:
        self.model = str(model)
        self.runtime_name = runtime
        self.device = device
        self.threads = threads
        self.detect = detect or DetectSpec()
        self._runtime = loaded
        self._info: RuntimeInfo | None = None
        self._owns_runtime = loaded is None
        self._tools: Any = None
        self.input_name = "images"
        self.boxes_name = "boxes"
        self.scores_name = "scores"
        self.size = DEFAULT_SIZE
        self.fixed_batch: int | None = None
        self.class_names: tuple[str, ...] = ()
        self._class_ids: np.ndarray | None = None

    # -- loading

    def open(self) -> Detector:
        """Resolve and load the model, read its signature, check it fits the detector contract."""
        self._tools = detection_tools()
        import supervision  # noqa: F401  (seconds to import: now, not inside the first frame's latency)

        if self._runtime is None:
            from zhisuan.inputs import resolve
            from zhisuan.runtime import load_runtime

            path = resolve(self.model, accept=("onnx", "openvino", "zoo", "package")).file()
            self._runtime = load_runtime(path, self.runtime_name, device=self.device, intra_op_threads=self.threads)
        try:
            self._read_signature(self._runtime)
        except Exception:
            self.close()
            raise
        self._info = self._runtime.info
        return self

    def warmup(self) -> None:
        """One untimed call on a batch of one, so the first frames do not carry the runtime's first-run cost."""
        self.infer(np.full((1, 3, self.size, self.size), 0.5, dtype=np.float32))

    def _read_signature(self, rt: Runtime) -> None:
        inputs, outputs = rt.inputs(), rt.outputs()
        where = f"model {self.model}"
        if len(inputs) != 1:
            raise UserError(f"{where} takes {len(inputs)} inputs; a detector takes one image batch [N, 3, S, S]")
        spec = inputs[0]
        self.input_name = spec.name
        shape = tuple(spec.shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise UserError(f"{where}: input {spec.name} has shape {list(shape)}; a detector takes [N, 3, S, S]")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            if h != w:
                raise UserError(f"{where}: input {spec.name} is {h}x{w}; the detector letterboxes to a square input")
            self.size = h
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        names = [o.name for o in outputs]
        if "boxes" in names and "scores" in names:
            self.boxes_name, self.scores_name = "boxes", "scores"
        elif len(outputs) == 2 and outputs[0].shape and outputs[0].shape[-1] == 4:
            self.boxes_name, self.scores_name = names
        else:
            raise UserError(f"{where} gives outputs {names}; a detector gives 'boxes' [N, K, 4] and 'scores' [N, K, C]")
        scores = next(o for o in outputs if o.name == self.scores_name)
        classes = scores.shape[-1] if scores.shape and isinstance(scores.shape[-1], int) else None
        coco = tuple(self._tools.COCO_NAMES)
        if classes is None or classes == len(coco):
            self.class_names = coco
        else:
            self.class_names = tuple(f"class_{i}" for i in range(classes))
        if self.detect.classes is not None:
            unknown = [c for c in self.detect.classes if c not in self.class_names]
            if unknown:
                raise UserError(f"detect.classes: {', '.join(map(repr, unknown))} not among the model's classes "
                                f"({', '.join(self.class_names[:8])}, ...)")
            self._class_ids = np.array([self.class_names.index(c) for c in self.detect.classes], dtype=np.int64)

    @property
    def info(self) -> RuntimeInfo | None:
        """What ran (read when the model was opened; kept after :meth:`close`)."""
        return self._info

    def close(self) -> None:
        if self._runtime is not None and self._owns_runtime:
            self._runtime.close()
            self._runtime = None

    def __enter__(self) -> Detector:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the stages

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """``image`` (H x W x 3 uint8 RGB) letterboxed to the model's input: (3 x S x S float32, info)."""
        return self._tools.letterbox(image, size=self.size)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One runtime call per batch (split or padded to a model's fixed batch): boxes, scores."""
        assert self._runtime is not None, "open() the detector first"
        n = batch.shape[0]
        step = self.fixed_batch
        if step is None or step == n:
            out = self._runtime.run({self.input_name: batch}, [self.boxes_name, self.scores_name])
            return self._check(out, n)
        boxes, scores = [], []
        for start in range(0, n, step):
            part = batch[start:start + step]
            rows = part.shape[0]
            if rows < step:
                part = np.concatenate([part, np.zeros((step - rows, *part.shape[1:]), part.dtype)])
            b, s = self._check(self._runtime.run({self.input_name: part}, [self.boxes_name, self.scores_name]), step)
            boxes.append(b[:rows])
            scores.append(s[:rows])
        return np.concatenate(boxes), np.concatenate(scores)

    def _check(self, out: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = np.asarray(out[self.boxes_name]), np.asarray(out[self.scores_name])
        if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
            raise UserError(f"model {self.model} gave {self.boxes_name} of shape {list(boxes.shape)}; "
                            f"expected [{n}, K, 4]")
        if scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
            raise UserError(f"model {self.model} gave {self.scores_name} of shape {list(scores.shape)}; "
                            f"expected [{n}, {boxes.shape[1]}, C]")
        return boxes, scores

    def postprocess(self, boxes: np.ndarray, scores: np.ndarray, info: Any, size_wh: Sequence[int]) -> sv.Detections:
        """One frame's ``boxes`` [K, 4] and ``scores`` [K, C]: NMS, boxes back in frame pixels (clipped)."""
        import supervision as sv

        d = self.detect
        xyxy, confidence, class_id = self._tools.nms_detections(
            boxes, scores, score_threshold=d.score_threshold, iou=d.iou,
            classes=None if self._class_ids is None else self._class_ids.tolist(), max_det=d.max_det)
        xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        class_id = np.asarray(class_id, dtype=np.int64).reshape(-1)
        if len(xyxy) == 0:
            empty = sv.Detections.empty()
            empty.data["class_name"] = np.array([], dtype=str)
            return empty
        xyxy = np.asarray(self._tools.unletterbox(xyxy, info), dtype=np.float32)
        w, h = size_wh
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        names = np.array([self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in class_id])
        return sv.Detections(xyxy=xyxy, confidence=np.asarray(confidence, dtype=np.float32).reshape(-1),
                             class_id=class_id, data={"class_name": names})
