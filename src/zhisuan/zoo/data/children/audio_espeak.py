"""``python -m zhisuan.zoo.data.children.audio_espeak LIB DATA VOICE RATE PITCH TEXT``: one utterance.

Started by :mod:`zhisuan.zoo.data.audio` once per utterance: libespeak-ng seeds its noise
generator from the clock and keeps synthesis state between utterances, so a fresh process with a
fixed seed renders the same text the same way every time. Loads the library ``LIB`` with its
``DATA`` directory through ctypes (nothing else), renders ``TEXT`` in ``VOICE`` at ``RATE`` words
per minute and ``PITCH`` (0-100), and writes the sample rate, a newline, then 16-bit PCM to stdout.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from typing import Any

from zhisuan._child import check_argv

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_POS_CHARACTER, _ESPEAK_CHARS_UTF8 = 1, 1


def main(argv: Sequence[str]) -> int:
    check_argv(argv, __spec__.name, "LIB", "DATA", "VOICE", "RATE", "PITCH", "TEXT")
    lib_path, data_path, voice, rate, pitch, text = argv
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(1)  # the noise sources are seeded from the clock otherwise
    chunks: list[bytes] = []

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    def collect(wav: Any, count: int, events: Any) -> int:
        if count > 0:
            chunks.append(ctypes.string_at(wav, 2 * count))
        return 0

    lib.espeak_SetSynthCallback(collect)
    if rate_hz <= 0 or lib.espeak_SetVoiceByName(voice.encode()) != 0:
        sys.exit(f"eSpeak NG: cannot initialise voice {voice!r}")
    lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)  # words per minute
    lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)  # 0-100
    data = text.encode("utf-8")
    status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if status != 0 or not chunks:
        sys.exit(f"eSpeak NG: synthesis failed with status {status}")
    sys.stdout.buffer.write(b"%d\n" % rate_hz + b"".join(chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
