"""Silero VAD entry: streaming helper, frame labels and metrics, seeded audio, end-to-end score."""

from __future__ import annotations

import numpy as np
import pytest

from zhisuan.runtime import load_runtime
from zhisuan.zoo.data import audio
from zhisuan.zoo.models import silero


@pytest.fixture(scope="module")
def vad():
    pytest.importorskip("onnxruntime")
    with load_runtime(silero.WEIGHTS.path(), "onnxruntime", intra_op_threads=1) as rt:
        yield rt


@pytest.fixture(scope="module")
def speech_clip() -> tuple[np.ndarray, slice]:
    """0.64 s of faint noise, a spoken sentence, 0.64 s of faint noise; returns audio and the speech span."""
    pytest.importorskip("espeakng_loader")
    speech = audio.synthesize_speech("Hello, this is a test of the voice activity detector.")
    speech = speech / np.sqrt(np.mean(speech**2)) * 0.05
    pad = np.zeros(20 * audio.FRAME_SAMPLES, dtype=np.float32)
    clip = np.concatenate([pad, speech, pad]).astype(np.float32)
    clip += np.random.default_rng(0).standard_normal(len(clip)).astype(np.float32) * 1e-4
    return clip, slice(len(pad), len(pad) + len(speech))


# --- streaming ---------------------------------------------------------------------------------


def test_stream_carries_state_and_context(vad, speech_clip) -> None:
    clip, _ = speech_clip
    stream = silero.SileroStream(vad)
    stream.reset(1)
    frames = len(clip) // audio.FRAME_SAMPLES
    probs = []
    for i in range(frames):
        before = stream.state.copy()
        chunk = clip[i * audio.FRAME_SAMPLES : (i + 1) * audio.FRAME_SAMPLES]
        probs.append(stream(chunk)[0])
        np.testing.assert_array_equal(stream.context[0], chunk[-silero.CONTEXT_SAMPLES :])
        assert stream.state.shape == (2, 1, silero.STATE_SIZE)
        assert not np.array_equal(stream.state, before)
    probs = np.array(probs)
    assert np.all((probs >= 0) & (probs <= 1))
    # the batch helper streams the same way
    np.testing.assert_allclose(silero.speech_probabilities(vad, clip)[0, :frames], probs, atol=1e-6)
    # a fresh state per chunk (no memory) gives different probabilities: the state matters
    stateless = []
    for i in range(frames):
        stream.reset(1)
        stateless.append(stream(clip[i * audio.FRAME_SAMPLES : (i + 1) * audio.FRAME_SAMPLES])[0])
    assert np.abs(np.array(stateless) - probs).max() > 0.05


def test_stream_detects_synthesized_speech(vad, speech_clip) -> None:
    clip, span = speech_clip
    probs = silero.speech_probabilities(vad, clip)[0]
    first = span.start // audio.FRAME_SAMPLES
    last = span.stop // audio.FRAME_SAMPLES
    assert probs[: first - 1].max() < 0.2  # leading near-silence
    assert np.mean(probs[first + 2 : last - 2] > 0.5) > 0.8  # inside the sentence
    assert probs[last + 8 :].max() < 0.5  # silence after the model's hangover


def test_stream_batches_independent_streams(vad, speech_clip) -> None:
    clip, _ = speech_clip
    quiet = np.zeros_like(clip)
    batched = silero.speech_probabilities(vad, np.stack([clip, quiet]))
    np.testing.assert_allclose(batched[0], silero.speech_probabilities(vad, clip)[0], atol=1e-5)
    np.testing.assert_allclose(batched[1], silero.speech_probabilities(vad, quiet)[0], atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_stream_drives_a_variant_without_sr_and_with_fixed_batch(speech_clip, backend) -> None:
    """The package's OpenVINO-friendly export takes no ``sr`` and a batch of exactly 1."""
    from zhisuan.runtime import backend_status

    if not next(s.available for s in backend_status() if s.name == backend):
        pytest.skip(f"{backend} is not installed")
    clip, _ = speech_clip
    variant = silero.WEIGHTS.path().parent / "silero_vad_openvino_16k.onnx"
    if not variant.is_file():
        pytest.skip("this silero-vad version ships no silero_vad_openvino_16k.onnx")
    with load_runtime(silero.WEIGHTS.path()) as main:
        expected = silero.speech_probabilities(main, np.stack([clip, clip[::-1].copy()]))
    with load_runtime(variant, backend) as rt:
        assert {s.name for s in rt.inputs()} == {"input", "state"}
        got = silero.speech_probabilities(rt, np.stack([clip, clip[::-1].copy()]))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 0.05
    assert np.mean((got > 0.5) == (expected > 0.5)) > 0.97


def test_stream_rejects_wrong_chunk(vad) -> None:
    from zhisuan.errors import UserError

    stream = silero.SileroStream(vad)
    with pytest.raises(UserError, match="512"):
        stream(np.zeros(256, dtype=np.float32))


# --- labels and metrics on hand-made arrays ----------------------------------------------------


def test_speech_activity_closes_short_pauses_only() -> None:
    rate = audio.SAMPLE_RATE
    clean = np.zeros(rate)
    clean[1600:4800] = 0.1  # 0.1-0.3 s
    clean[6400:8000] = 0.1  # after a 0.1 s pause: merged
    clean[12800:14400] = 0.1  # after a 0.3 s pause: separate
    active = audio.speech_activity(clean)
    assert not active[:1600].any()
    assert active[1600:8000].all()
    assert not active[8000:12800].any()
    assert active[12800:14400].all()
    assert not active[14400:].any()


def test_frame_labels_majority_of_samples() -> None:
    activity = np.zeros(4 * 512, dtype=bool)
    activity[:300] = True  # frame 0: 300/512 speech
    activity[512 + 312 :] = True  # frame 1: 200/512; frames 2-3 full
    labels = audio.frame_labels(activity)
    assert labels.tolist() == [True, False, True, True]
    assert audio.frame_labels(np.ones(700, dtype=bool)).tolist() == [True]  # partial frame dropped


def test_detection_metrics_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.7, 0.4])
    m = silero.detection_metrics(scores, labels)
    # predicted speech: 0, 1, 3, 6 -> tp 3, fp 1, fn 1
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(6 / 8)
    # pairs (pos, neg) ranked correctly: 0.9,0.8,0.7 beat all 4 negatives; 0.3 beats 0.1 and 0.2
    assert m["roc_auc"] == pytest.approx((4 + 4 + 4 + 2) / 16)


def test_roc_auc_ties_and_one_class() -> None:
    assert silero.roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert silero.roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == pytest.approx(1.0)
    assert silero.roc_auc(np.array([0.9, 0.1]), np.array([0, 1])) == pytest.approx(0.0)
    assert silero.roc_auc(np.array([0.2, 0.3]), np.array([1, 1])) is None
    assert "roc_auc" not in silero.detection_metrics(np.array([0.2, 0.3]), np.array([0, 0]))


def test_backgrounds_are_unit_rms_and_distinct() -> None:
    rng = np.random.default_rng(0)
    spectra = {}
    for kind in audio.BACKGROUNDS:
        noise = audio.background_noise(kind, 16000, rng)
        assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-6)
        spectra[kind] = np.abs(np.fft.rfft(noise))
    # pink noise puts more energy below 500 Hz than white noise; hum is a line at 50/60 Hz
    low = slice(1, 500)
    assert spectra["pink"][low].sum() / spectra["pink"].sum() > 2 * spectra["white"][low].sum() / spectra["white"].sum()
    assert int(np.argmax(spectra["hum"])) in (50, 60)


# --- seeded clips ------------------------------------------------------------------------------


def test_clips_are_deterministic_and_labelled() -> None:
    pytest.importorskip("espeakng_loader")
    first = audio.make_vad_clips(6, seed=3)
    audio._render.cache_clear()  # render again in fresh eSpeak processes, not from the memo
    again = audio.make_vad_clips(6, seed=3)
    other = audio.make_vad_clips(2, seed=4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(first[0].audio, other[0].audio)
    for clip in first:
        assert clip.audio.dtype == np.float32 and clip.audio.shape == (160 * 512,)
        assert clip.labels.shape == (160,)
        assert np.abs(clip.audio).max() <= 1.0
    assert [c.background for c in first] == [*audio.BACKGROUNDS, audio.BACKGROUNDS[0]]
    assert first[5].texts == () and not first[5].labels.any()  # every sixth clip is noise only
    assert all(0.1 < c.labels.mean() < 0.95 for c in first[:5])


# --- the zoo entry -----------------------------------------------------------------------------


def test_entry_metadata() -> None:
    from zhisuan import zoo

    entry = zoo.get("silero-vad")
    assert entry.kind == "onnx-shipped" and entry.license == "MIT"
    assert entry.weights is not None and entry.weights.sha256.startswith("1a153a22")
    assert entry.to_dict()["metric"] == "f1"


@pytest.mark.slow
def test_evaluate_end_to_end() -> None:
    pytest.importorskip("espeakng_loader")
    from zhisuan import zoo

    result = zoo.evaluate("silero-vad", samples=30, seed=0)
    assert result.metric == "f1" and result.samples == 30
    assert result.value > 0.93  # measured 0.967 on these 30 clips (0.966 on the default 60)
    assert result.secondary["roc_auc"] > 0.98  # measured 0.994
    assert 0.3 < result.secondary["speech_frame_fraction"] < 0.7
