"""Silero VAD: voice activity detection shipped as ONNX in the ``silero-vad`` wheel.

The model is streaming: each call takes 512 new samples at 16 kHz plus the last 64 samples of
the previous call (its context) and a recurrent state [2, batch, 128], and returns the speech
probability of those 32 ms and the next state (``silero_vad/utils_vad.py``, ``OnnxWrapper``).

>>> from zhisuan.runtime import load_runtime
>>> with load_runtime(path) as rt:  # doctest: +SKIP
...     probs = speech_probabilities(rt, audio)  # [batch, frames]
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zhisuan.errors import UserError
from zhisuan.progress import Progress
from zhisuan.zoo.base import (
    BuildOptions,
    EvalOptions,
    EvalResult,
    Feed,
    Split,
    WeightsFile,
    ZooEntry,
)
from zhisuan.zoo.data.audio import FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    from zhisuan.runtime.base import Runtime, TensorSpec

CONTEXT_SAMPLES = 64
STATE_SIZE = 128
THRESHOLD = 0.5

WEIGHTS = WeightsFile(
    distribution="silero-vad",
    module="silero_vad",
    relpath="data/silero_vad.onnx",
    sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    install_hint="pip install --no-deps silero-vad==6.2.3",
)


class SileroStream:
    """Feeds a Silero VAD runtime chunk by chunk, carrying its state and 64-sample context.

    Works on any runtime with the model's signature (ONNX Runtime, OpenVINO, a quantized copy):
    inputs are found by name when the usual names are present, otherwise by rank and dtype.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        inputs = runtime.inputs()
        self._audio = _pick(inputs, "input", rank=2, floating=True)
        self._state = _pick(inputs, "state", rank=3, floating=True)
        # the 16 kHz-only exports (e.g. silero_vad_openvino_16k.onnx) take no sample-rate input
        has_sr = any(s.name == "sr" or (len(s.shape) == 0 and not s.dtype.startswith("float")) for s in inputs)
        self._sr = _pick(inputs, "sr", rank=0, floating=False) if has_sr else None
        outputs = runtime.outputs()
        self._prob = _pick(outputs, "output", rank=2, floating=True).name
        self._state_out = _pick(outputs, "stateN", rank=3, floating=True).name
        batch_dim = self._audio.shape[0] if self._audio.shape else None
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.batch = 0
        self.reset()

    def reset(self, batch: int = 1) -> None:
        """Start new streams: zero state and zero context, as ``OnnxWrapper.reset_states``."""
        self.batch = batch
        self.state = np.zeros((2, batch, STATE_SIZE), dtype=self._state.dtype)
        self.context = np.zeros((batch, CONTEXT_SAMPLES), dtype=self._audio.dtype)

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """Speech probability of each stream's next 512 samples: ``chunk`` [batch, 512] -> [batch]."""
        chunk = np.asarray(chunk, dtype=self._audio.dtype)
        if chunk.ndim == 1:
            chunk = chunk[None, :]
        if chunk.shape != (self.batch, FRAME_SAMPLES):
            raise UserError(f"Silero VAD takes chunks of shape ({self.batch}, {FRAME_SAMPLES}), got {chunk.shape}")
        window = np.concatenate([self.context, chunk], axis=1)
        feeds = {self._audio.name: window, self._state.name: self.state}
        if self._sr is not None:
            feeds[self._sr.name] = np.array(SAMPLE_RATE, dtype=self._sr.dtype)
        out = self.runtime.run(feeds, [self._prob, self._state_out])
        self.state = out[self._state_out].astype(self._state.dtype, copy=False)
        self.context = window[:, -CONTEXT_SAMPLES:]
        return out[self._prob].reshape(self.batch).astype(np.float32)


def _pick(specs: list[TensorSpec], name: str, *, rank: int, floating: bool) -> TensorSpec:
    by_name = {s.name: s for s in specs}
    if name in by_name:
        return by_name[name]
    matches = [s for s in specs if len(s.shape) == rank and s.dtype.startswith("float") == floating]
    if len(matches) != 1:
        raise UserError(f"this model does not have Silero VAD's signature (no tensor like {name!r})")
    return matches[0]


def speech_probabilities(runtime: Runtime, audio: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms frame of each 16 kHz clip: ``audio`` [batch, samples] -> [batch, frames].

    The last partial frame is zero-padded, as ``get_speech_timestamps`` does.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    frames = -(-audio.shape[1] // FRAME_SAMPLES)
    padded = np.zeros((audio.shape[0], frames * FRAME_SAMPLES), dtype=np.float32)
    padded[:, : audio.shape[1]] = audio
    stream = SileroStream(runtime)
    group = stream.max_batch or audio.shape[0]  # some exports fix the batch at 1
    probs = np.empty((audio.shape[0], frames), dtype=np.float32)
    for first in range(0, audio.shape[0], group):
        rows = slice(first, min(first + group, audio.shape[0]))
        stream.reset(rows.stop - rows.start)
        for i in range(frames):
            probs[rows, i] = stream(padded[rows, i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
    return probs


# --- metrics -------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); None with one class."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def detection_metrics(scores: np.ndarray, labels: np.ndarray, *, threshold: float = THRESHOLD) -> dict[str, float]:
    """Frame-level f1, precision, recall, accuracy at ``threshold``, and roc_auc (when defined)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    predicted = np.asarray(scores).ravel() >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    metrics = {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": float(np.mean(predicted == labels)) if labels.size else 0.0,
    }
    auc = roc_auc(scores, labels)
    if auc is not None:
        metrics["roc_auc"] = auc
    return metrics


# --- entry ---------------------------------------------------------------------------------

DEFAULT_SAMPLES = 60


def _build(out: Path, options: BuildOptions, progress: Progress) -> None:
    if options.opset is not None:
        raise UserError("silero-vad ships as ONNX; it cannot be re-exported at another opset")
    source = WEIGHTS.path()  # verifies the pinned sha256
    progress(f"silero-vad: copying {source.name}")
    shutil.copyfile(source, out)


def _evaluate(runtime: Runtime, options: EvalOptions) -> EvalResult:
    from zhisuan.zoo.data.audio import make_vad_clips

    count = options.samples or DEFAULT_SAMPLES
    start = time.perf_counter()
    options.progress(f"silero-vad: rendering {count} clips (seed {options.seed})")
    clips = make_vad_clips(count, seed=options.seed)
    audio = np.stack([c.audio for c in clips])
    labels = np.stack([c.labels for c in clips])
    options.progress(f"silero-vad: streaming {labels.size} frames")
    probs = speech_probabilities(runtime, audio)[:, : labels.shape[1]]
    metrics = detection_metrics(probs, labels)
    secondary: Mapping[str, float] = {
        **{k: round(v, 6) for k, v in metrics.items() if k != "f1"},
        "speech_frame_fraction": round(float(labels.mean()), 6),
        "frames": float(labels.size),
        "eval_s": round(time.perf_counter() - start, 3),
    }
    return EvalResult(
        model="silero-vad",
        metric="f1",
        value=round(metrics["f1"], 6),
        samples=count,
        secondary=secondary,
    )


def realistic_inputs(split: Split, batches: int, seed: int) -> list[Feed]:
    """Windows (with their carried state) of speech-over-noise clips, every few frames: recorded
    while the model runs, since the state input is only realistic as the model's own output."""
    from zhisuan.zoo.data.audio import make_vad_clips
    from zhisuan.zoo.recording import recorded_feeds

    clips = make_vad_clips(max(2, batches // 2), seed=seed, clip_frames=64)
    audio = np.stack([c.audio for c in clips])
    feeds = recorded_feeds("silero-vad", lambda rt: speech_probabilities(rt, audio))
    stride = max(1, len(feeds) // batches)
    return feeds[stride - 1 :: stride][:batches]


ENTRIES = [
    ZooEntry(
        name="silero-vad",
        task="voice activity detection",
        summary="Silero VAD v6: streaming speech probability per 32 ms of 16 kHz audio (LSTM, ~2 MB)",
        kind="onnx-shipped",
        license="MIT",
        weights=WEIGHTS,
        preprocess=(
            "16 kHz mono float32 in [-1, 1]; windows of 512 new samples, each prefixed by the previous "
            "window's last 64 samples (zeros at the start); state [2, batch, 128] starts at zero and is "
            "carried from call to call; sr = 16000 (int64 scalar)"
        ),
        postprocess="output [batch, 1] is the speech probability of the 512 new samples; speech if >= 0.5",
        metric="f1",
        metric_description=(
            "frame-level F1 of speech detection at threshold 0.5 over 32 ms frames; secondary: precision, "
            "recall, accuracy, ROC AUC of the probabilities"
        ),
        eval_set=(
            "seeded 5.12 s clips: English sentences rendered offline with eSpeak NG (8 voices, random rate "
            "and pitch) over silence, white/pink noise, 50/60 Hz hum or music-like chords at 0-20 dB SNR; "
            "every sixth clip is noise only; frame labels from the clean speech track (-40 dB floor, "
            "pauses < 200 ms count as speech, >= half of the frame)"
        ),
        default_eval_samples=DEFAULT_SAMPLES,
        build=_build,
        evaluate=_evaluate,
        inputs=realistic_inputs,
        quick=True,
        architecture_source="silero-vad 6.2.3 (shipped ONNX)",
        metadata={
            "sample_rate": SAMPLE_RATE,
            "chunk_samples": FRAME_SAMPLES,
            "context_samples": CONTEXT_SAMPLES,
            "state_shape": [2, "batch", STATE_SIZE],
            "streaming": True,
            "eval_requires": "espeakng-loader==0.2.4",
        },
    )
]
