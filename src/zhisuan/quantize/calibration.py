"""Calibration and metric inputs: ``.npz`` data, seeded random feeds, or realistic zoo inputs.

Random calibration is a poor proxy for real data (activation ranges of noise are not those of
images or text), so it is flagged in the result. For zoo models, :func:`zoo_feeds` renders
inputs like the entry's evaluation set but from a different seed (or, for EfficientNet, from
different photographs), so calibration never sees the evaluation data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhisuan.errors import UserError

Feeds = list[dict[str, np.ndarray]]

#: Seeds of zoo calibration data; the zoo evaluators use seed 0 by default.
CALIB_SEED = 1_000_003
METRIC_SEED = 2_000_003

RANDOM_WARNING = (
    "calibrated on random inputs: a poor proxy for real data, ranges (and so accuracy) may be far "
    "off; give --calib DATA (.npz keyed by input names) or use a zoo model for realistic inputs"
)


@dataclass(frozen=True)
class Calibration:
    """Calibration feeds and where they came from (``npz``, ``zoo:NAME`` or ``random``)."""

    feeds: Feeds
    source: str
    warning: str | None = None

    @property
    def samples(self) -> int:
        return sum(_batch(f) for f in self.feeds)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "batches": len(self.feeds), "samples": self.samples, "warning": self.warning}


def _batch(feed: dict[str, np.ndarray]) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def load_calibration(
    model: Any, *, data: str | Path | None = None, random: int | None = None, zoo_name: str | None = None,
    seed: int = CALIB_SEED, batches: int = 8,
) -> Calibration:
    """Feeds from ``data``, else a zoo model's realistic inputs, else ``random`` seeded batches."""
    from zhisuan.graph.sources import sample_inputs

    if data is not None:
        return Calibration(sample_inputs(model, data=data), f"npz:{data}")
    if zoo_name is not None and random is None:
        feeds = zoo_feeds(zoo_name, batches=batches, seed=seed)
        if feeds is not None:
            return Calibration(feeds, f"zoo:{zoo_name}")
    count = random if random is not None else batches
    return Calibration(sample_inputs(model, random=count, seed=seed), "random", RANDOM_WARNING)


def zoo_feeds(name: str, *, batches: int = 8, seed: int = CALIB_SEED) -> Feeds | None:
    """Realistic input batches for zoo model ``name``, disjoint from its evaluation set; None if unknown."""
    makers = {
        "ppocr-rec": _ppocr_rec, "ppocr-cls": _ppocr_cls, "ppocr-det": _ppocr_det,
        "efficientnet-lite0": _efficientnet, "minilm-l6": _minilm, "resnet50": _resnet50,
        "bert-base": _bert, "gpt2-small": _gpt2, "silero-vad": _silero,
    }
    maker = makers.get(name)
    return None if maker is None else maker(batches, seed)


def _ppocr_lines(count: int, seed: int, height: int, width: int | None, flip: bool) -> Feeds:
    from zhisuan.zoo.data.text_render import text_lines
    from zhisuan.zoo.models import ppocr

    lines = [line.image for line in text_lines(count, seed)]
    if flip:  # the classifier sees both orientations, as in its evaluation set
        lines = [np.ascontiguousarray(img[::-1, ::-1]) if i % 2 else img for i, img in enumerate(lines)]
    ratios = np.array([img.shape[1] / img.shape[0] for img in lines])
    order = np.argsort(ratios, kind="stable")
    batch = ppocr.REC_BATCH
    feeds = []
    for start in range(0, count, batch):
        idx = order[start : start + batch]
        w = width or int(height * max(ppocr.REC_MIN_WIDTH / height, float(ratios[idx].max())))
        x = np.stack([ppocr.line_tensor(lines[i], height, w) for i in idx])
        feeds.append({"x": x.astype(np.float32)})
    return feeds


def _ppocr_rec(batches: int, seed: int) -> Feeds:
    from zhisuan.zoo.models import ppocr

    return _ppocr_lines(batches * ppocr.REC_BATCH, seed, ppocr.REC_HEIGHT, None, flip=False)


def _ppocr_cls(batches: int, seed: int) -> Feeds:
    from zhisuan.zoo.models import ppocr

    return _ppocr_lines(batches * ppocr.REC_BATCH, seed, ppocr.CLS_HEIGHT, ppocr.CLS_WIDTH, flip=True)


def _ppocr_det(batches: int, seed: int) -> Feeds:
    from zhisuan.zoo.data.text_render import text_pages
    from zhisuan.zoo.models.ppocr import det_tensor

    return [{"x": det_tensor(page.image)} for page in text_pages(max(2, batches // 2), seed)]


#: scikit-image sample photos that are NOT in the EfficientNet evaluation set.
_CALIB_PHOTOS = ("astronaut.png", "brick.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
                 "ihc.png", "retina.jpg", "color.png", "coins.png", "moon.png", "horse.png", "logo.png")


def _efficientnet(batches: int, seed: int) -> Feeds:
    import importlib.util

    from PIL import Image

    from zhisuan.zoo.data.images import make_view
    from zhisuan.zoo.models import efficientnet

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None  # type: ignore[return-value]
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    photos = []
    for name in _CALIB_PHOTOS:
        if (root / name).is_file():
            with Image.open(root / name) as img:
                photos.append(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())
    if not photos:
        return None  # type: ignore[return-value]
    rng = np.random.default_rng(seed)
    size, per_batch = efficientnet.IMAGE_SIZE, efficientnet.EVAL_BATCH
    views = ("center", "wide", "zoom", "full", "flip")
    feeds = []
    for _ in range(batches):
        pixels = np.stack([
            make_view(photos[int(rng.integers(len(photos)))], views[int(rng.integers(len(views)))], size)
            for _ in range(per_batch)
        ])
        feeds.append({"image": efficientnet.preprocess(pixels)})
    return feeds


def _minilm(batches: int, seed: int) -> Feeds:
    from zhisuan.zoo.data.text_render import random_text
    from zhisuan.zoo.models import minilm

    rng = np.random.default_rng(seed)
    tok = minilm.tokenizer()
    feeds = []
    for _ in range(batches):
        texts = [" ".join(random_text(rng, max_tokens=8, max_chars=60) for _ in range(int(rng.integers(1, 4))))
                 for _ in range(16)]
        feeds.append(tok(texts))
    return feeds


def _resnet50(batches: int, seed: int) -> Feeds:
    from zhisuan.zoo.models.reference import structured_images

    per_batch = 4
    images = structured_images(batches * per_batch, seed=seed)
    return [{"image": images[i : i + per_batch]} for i in range(0, len(images), per_batch)]


def _bert(batches: int, seed: int) -> Feeds:
    from zhisuan.zoo.models.reference import BERT_SEQ_LEN, bert_inputs

    per_batch = 4
    data = bert_inputs(batches * per_batch, BERT_SEQ_LEN, seed=seed)
    return [{k: v[i : i + per_batch] for k, v in data.items()} for i in range(0, batches * per_batch, per_batch)]


class _Recorder:
    """A runtime that records every feed it runs: inputs of stateful models (a KV cache, an RNN
    state) are only realistic when they come from running the model itself."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.feeds: Feeds = []

    def inputs(self) -> Any:
        return self.runtime.inputs()

    def outputs(self) -> Any:
        return self.runtime.outputs()

    def run(self, feeds: dict[str, np.ndarray], output_names: Any = None) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.runtime.run(feeds, output_names)


def _recorded(name: str, drive: Any) -> Feeds:
    from zhisuan import zoo
    from zhisuan.runtime import load_runtime

    with load_runtime(zoo.model_path(name), "onnxruntime", intra_op_threads=2) as runtime:
        recorder = _Recorder(runtime)
        drive(recorder)
    return recorder.feeds


def _gpt2(batches: int, seed: int) -> Feeds:
    """Prefill and cached decoding steps of the float model on prompts of another seed."""
    from zhisuan.zoo.models.reference import GPT2_PROMPT_LEN, generate, gpt2_prompts

    steps = 4
    prompts = gpt2_prompts(max(1, -(-batches // steps)), GPT2_PROMPT_LEN, seed=seed)
    feeds = _recorded("gpt2-small", lambda rt: [generate(rt, p[None], steps) for p in prompts])
    return feeds[:batches]


def _silero(batches: int, seed: int) -> Feeds:
    """Windows (with their carried state) of speech-over-noise clips from another seed, every few frames."""
    from zhisuan.zoo.data.audio import make_vad_clips
    from zhisuan.zoo.models.silero import speech_probabilities

    clips = make_vad_clips(max(2, batches // 2), seed=seed, clip_frames=64)
    audio = np.stack([c.audio for c in clips])
    feeds = _recorded("silero-vad", lambda rt: speech_probabilities(rt, audio))
    stride = max(1, len(feeds) // batches)
    return feeds[stride - 1 :: stride][:batches]


def check_not_empty(feeds: Feeds, what: str) -> None:
    if not feeds:
        raise UserError(f"no {what} inputs")
