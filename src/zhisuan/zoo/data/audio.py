"""Seeded audio for voice activity detection: real synthesized speech over known noises.

Speech is rendered offline with eSpeak NG (the ``espeakng-loader`` wheel ships the library and
its data; nothing is downloaded), resampled from 22,050 Hz to 16 kHz and mixed with silence,
white or pink noise, mains hum or music-like chords at a chosen signal-to-noise ratio. The clean
speech track is kept, so every 32 ms frame has a known label.

>>> clips = make_vad_clips(2, seed=0)  # doctest: +SKIP
>>> clips[0].audio.shape, clips[0].labels.shape  # doctest: +SKIP
((81920,), (160,))
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from zhisuan._child import child_command, child_env
from zhisuan.errors import BackendUnavailableError, InternalError

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512  # one Silero VAD window: 32 ms at 16 kHz
ESPEAK_DISTRIBUTION = "espeakng-loader"
ESPEAK_INSTALL_HINT = "pip install espeakng-loader==0.2.4"

# Short English sentences written for this data set (no corpus is copied).
SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Please check the temperature of the server room before noon.",
    "We measured the latency of every model on two different cards.",
    "Turn left at the second light and park near the old library.",
    "The train to the airport leaves every twenty minutes.",
    "Could you send me the report by Friday afternoon?",
    "Seven hundred people attended the concert last night.",
    "The battery lasted almost three days on a single charge.",
    "Open the window, it is getting warm in here.",
    "Her brother plays the violin in a small orchestra.",
    "The results were good, but the power draw was too high.",
    "Bring two apples, a loaf of bread and some cheese.",
    "The meeting has been moved to Thursday at ten.",
    "A cold wind blew across the empty harbour.",
    "Nobody expected the quiet student to win the prize.",
    "Quantized models run faster but may lose some accuracy.",
    "The river rose quickly after the heavy rain.",
    "Remember to save your work before you shut down the computer.",
    "My grandmother grew tomatoes, beans and sunflowers.",
    "Hello, this is a test of the voice activity detector.",
)

# eSpeak NG voice + variant names; variants change pitch, formants and breathiness.
VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+f3",
    "en+m3",
    "en-gb-x-rp+f2",
    "en-us+klatt",
    "en+m7",
    "en-us+f5",
    "en-gb-scotland+m2",
)

BACKGROUNDS: tuple[str, ...] = ("silence", "white", "pink", "hum", "chords")
SNRS_DB: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0)


@dataclass(frozen=True)
class VadClip:
    """One evaluation clip: 16 kHz mono audio and one speech label per 512-sample frame."""

    audio: np.ndarray  # float32 [samples]
    labels: np.ndarray  # bool [samples // FRAME_SAMPLES]
    background: str
    snr_db: float | None  # None when the clip has no speech
    texts: tuple[str, ...]
    voices: tuple[str, ...]


# --- eSpeak NG, one fresh process per utterance -------------------------------------------

# libespeak-ng seeds its noise generator from the clock and keeps synthesis state between
# utterances (pitch flutter, noise), so the same text renders differently the second time in a
# process. A fresh process with a fixed seed renders it the same way every time, so each
# utterance is rendered in its own short-lived interpreter (it calls the library with ctypes), which also
# keeps the library's global state out of this process.
_RENDER = "zhisuan.zoo.data.children.audio_espeak"


@cache
def _espeak_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise BackendUnavailableError(
            ESPEAK_DISTRIBUTION, "it renders the speech of the VAD evaluation set", ESPEAK_INSTALL_HINT
        ) from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def espeak_version() -> str | None:
    """Version of the installed ``espeakng-loader`` wheel, or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version(ESPEAK_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=256)
def _render(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[int, bytes]:
    lib_path, data_path = _espeak_paths()
    args = child_command(_RENDER, lib_path, data_path, voice, str(rate_wpm), str(pitch), text)
    done = subprocess.run(args, capture_output=True, timeout=60, check=False, env=child_env())
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InternalError(f"eSpeak NG failed to render {text!r} with {voice!r}: {reason[0]}")
    header, _, pcm = done.stdout.partition(b"\n")
    return int(header), pcm


def synthesize_speech(text: str, *, voice: str = "en-us", rate_wpm: int = 170, pitch: int = 50) -> np.ndarray:
    """Render ``text`` with eSpeak NG as float32 samples in [-1, 1] at 16 kHz (deterministic)."""
    from math import gcd

    from scipy.signal import resample_poly

    rate, pcm = _render(text, voice, rate_wpm, pitch)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    g = gcd(SAMPLE_RATE, rate)
    return resample_poly(samples, SAMPLE_RATE // g, rate // g).astype(np.float32)


def prerender(requests: list[tuple[str, str, int, int]]) -> None:
    """Render (text, voice, rate_wpm, pitch) requests in parallel, one process per CPU at most."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(lambda r: _render(*r), requests))


# --- labels --------------------------------------------------------------------------------


def speech_activity(clean: np.ndarray, *, window: int = 160, floor_db: float = -40.0, min_gap_s: float = 0.2) -> np.ndarray:
    """Per-sample speech mask of a clean speech track.

    A 10 ms window is active when its RMS is within ``floor_db`` of the loudest window; pauses
    shorter than ``min_gap_s`` (between words, stop closures) count as speech, as human
    annotators label them.
    """
    clean = np.asarray(clean, dtype=np.float64)
    n = len(clean)
    windows = -(-n // window)
    padded = np.zeros(windows * window)
    padded[:n] = clean
    rms = np.sqrt(np.mean(padded.reshape(windows, window) ** 2, axis=1))
    if rms.max() <= 0:
        return np.zeros(n, dtype=bool)
    active = rms > rms.max() * 10 ** (floor_db / 20)
    active = _close_gaps(active, max_gap=round(min_gap_s * SAMPLE_RATE / window) - 1)
    return np.repeat(active, window)[:n]


def _close_gaps(active: np.ndarray, *, max_gap: int) -> np.ndarray:
    out = active.copy()
    idx = np.flatnonzero(active)
    for left, right in itertools.pairwise(idx):
        if 1 < right - left <= max_gap + 1:
            out[left:right] = True
    return out


def frame_labels(activity: np.ndarray, *, frame: int = FRAME_SAMPLES, min_fraction: float = 0.5) -> np.ndarray:
    """One bool per whole ``frame``: True when at least ``min_fraction`` of its samples are speech."""
    activity = np.asarray(activity, dtype=bool)
    frames = len(activity) // frame
    fraction = activity[: frames * frame].reshape(frames, frame).mean(axis=1)
    return fraction >= min_fraction


# --- backgrounds ---------------------------------------------------------------------------


def background_noise(kind: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS float64 noise of one kind: silence (faint white), white, pink, hum, chords."""
    if kind in ("silence", "white"):
        noise = rng.standard_normal(samples)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(samples))
        freqs = np.fft.rfftfreq(samples, 1 / SAMPLE_RATE)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, n=samples)
    elif kind == "hum":
        t = np.arange(samples) / SAMPLE_RATE
        base = rng.choice([50.0, 60.0])
        noise = sum(
            (0.6**k) * np.sin(2 * np.pi * base * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(6)
        )
        noise = noise + 0.05 * rng.standard_normal(samples)
    elif kind == "chords":
        noise = _chords(samples, rng)
    else:
        raise InternalError(f"unknown background {kind!r}")
    noise = np.asarray(noise, dtype=np.float64)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def _chords(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like: a chord (three harmonic notes) that changes every 0.4-1.0 s, with decay."""
    out = np.zeros(samples)
    start = 0
    while start < samples:
        length = min(int(rng.uniform(0.4, 1.0) * SAMPLE_RATE), samples - start)
        t = np.arange(length) / SAMPLE_RATE
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        envelope = np.exp(-t * rng.uniform(1.0, 4.0)) * np.minimum(1.0, t / 0.01)
        for interval in (0, 4 if rng.random() < 0.5 else 3, 7):
            f0 = root * 2 ** (interval / 12)
            for harmonic in range(1, 6):
                if f0 * harmonic < SAMPLE_RATE / 2:
                    out[start : start + length] += envelope * np.sin(2 * np.pi * f0 * harmonic * t) / harmonic
        start += length
    return out


# --- clips ---------------------------------------------------------------------------------


def make_vad_clips(count: int, *, seed: int = 0, clip_frames: int = 160) -> list[VadClip]:
    """``count`` deterministic clips of ``clip_frames`` x 32 ms (default 5.12 s).

    Backgrounds cycle through :data:`BACKGROUNDS`; every sixth clip has no speech at all (to
    count false alarms on noise and music). Other clips hold one or two sentences at a random
    SNR from :data:`SNRS_DB` (speech RMS over its active samples vs. noise RMS), in a random
    voice, rate and pitch, at a speech level between -32 and -18 dBFS. Clip ``i`` depends only
    on ``seed`` and ``i``, not on ``count``.
    """
    plans = [_ClipPlan.draw(i, seed=seed) for i in range(count)]
    prerender([u for plan in plans for u in plan.utterances])
    return [plan.render(clip_frames) for plan in plans]


@dataclass
class _ClipPlan:
    """Every random choice of one clip, drawn before any audio is rendered."""

    index: int
    rng: np.random.Generator  # continues with the background's draws
    utterances: list[tuple[str, str, int, int]]  # (text, voice, rate_wpm, pitch)
    start_s: float
    gaps_s: list[float]

    @classmethod
    def draw(cls, index: int, *, seed: int) -> _ClipPlan:
        rng = np.random.default_rng([seed, index, 0x5A])
        count = int(rng.integers(1, 3)) if index % 6 != 5 else 0
        start_s = float(rng.uniform(0.2, 1.0))
        utterances, gaps = [], []
        for _ in range(count):
            utterances.append(
                (str(rng.choice(SENTENCES)), str(rng.choice(VOICES)), int(rng.integers(150, 210)), int(rng.integers(30, 71)))
            )
            gaps.append(float(rng.uniform(0.4, 1.2)))
        return cls(index, rng, utterances, start_s, gaps)

    def render(self, clip_frames: int) -> VadClip:
        rng = self.rng
        samples = clip_frames * FRAME_SAMPLES
        background = BACKGROUNDS[self.index % len(BACKGROUNDS)]
        clean = np.zeros(samples)
        texts: list[str] = []
        voices: list[str] = []
        cursor = int(self.start_s * SAMPLE_RATE)
        for (text, voice, rate_wpm, pitch), gap_s in zip(self.utterances, self.gaps_s, strict=True):
            room = samples - cursor - int(0.1 * SAMPLE_RATE)
            if room < SAMPLE_RATE // 2:
                break
            speech = _trim_silence(synthesize_speech(text, voice=voice, rate_wpm=rate_wpm, pitch=pitch))[:room]
            clean[cursor : cursor + len(speech)] = speech
            texts.append(text)
            voices.append(voice)
            cursor += len(speech) + int(gap_s * SAMPLE_RATE)
        activity = speech_activity(clean)
        noise = background_noise(background, samples, rng)
        snr_db: float | None = None
        if activity.any():
            level = 10 ** (rng.uniform(-32, -18) / 20)
            clean *= level / float(np.sqrt(np.mean(clean[activity] ** 2)))
            if background == "silence":
                noise *= 10 ** (-65 / 20)
            else:
                snr_db = float(rng.choice(SNRS_DB))
                noise *= level / 10 ** (snr_db / 20)
        else:
            noise *= 10 ** ((-65 if background == "silence" else rng.uniform(-35, -20)) / 20)
        audio = np.clip(clean + noise, -1.0, 1.0).astype(np.float32)
        return VadClip(audio, frame_labels(activity), background, snr_db, tuple(texts), tuple(voices))


def _trim_silence(speech: np.ndarray) -> np.ndarray:
    active = np.flatnonzero(np.abs(speech) > 1e-3 * np.abs(speech).max())
    return speech[active[0] : active[-1] + 1] if len(active) else speech
