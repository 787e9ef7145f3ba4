"""Waveform levels from an encoded recording (for recordings finalized before
`waveform.json` existed): the right shape over time, and never the whole file decoded
into memory at once."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np

from storyroom.archive.clips import encode
from storyroom.finalize.waveform import levels_from_audio

RATE = 48_000
SECONDS = 60


def tone_mp3(path: Path) -> None:
    """20 s of a loud tone (-6 dBFS), 20 s of silence, 20 s of a quiet one (-40 dBFS)."""
    t = np.arange(RATE * 20) / RATE
    loud = 0.5 * np.sin(2 * np.pi * 440 * t)
    quiet = 0.01 * np.sin(2 * np.pi * 440 * t)
    mono = np.concatenate([loud, np.zeros_like(t), quiet])
    pcm = (np.repeat(mono[:, None], 2, axis=1) * 32767).astype(np.int16)
    data, content_type, _ = encode(pcm, RATE, "stereo")
    assert content_type == "audio/mpeg"
    path.write_bytes(data)


def test_levels_follow_the_audio_and_stream(tmp_path: Path) -> None:
    mp3 = tmp_path / "access.mp3"
    tone_mp3(mp3)
    tracemalloc.start()
    try:
        document = json.loads(levels_from_audio(mp3, float(SECONDS)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    decoded_bytes = SECONDS * RATE * 2 * 4  # the whole file as float32 stereo: ~23 MB
    assert peak < decoded_bytes / 10, f"{peak / 1e6:.1f} MB held while decoding"
    assert document["version"] == 1 and document["duration_s"] == SECONDS
    levels = np.array(document["levels"])
    assert len(levels) == 1000
    third = len(levels) // 3
    loud, silent, quiet = (
        levels[10 : third - 10],
        levels[third + 10 : 2 * third - 10],
        levels[2 * third + 10 : -10],
    )
    # dB above -48 dBFS on a 0..100 scale: -6 dBFS is 87.5, -40 dBFS is 16.7
    assert np.all(np.abs(loud - 87.5) <= 3), loud
    assert np.all(silent == 0), silent
    assert np.all(np.abs(quiet - 16.7) <= 3), quiet


def test_a_decoder_that_runs_long_is_cut_at_the_duration(tmp_path: Path) -> None:
    mp3 = tmp_path / "access.mp3"
    tone_mp3(mp3)
    # told the recording is half as long: the second half (silence, quiet) is not drawn
    levels = np.array(json.loads(levels_from_audio(mp3, SECONDS / 2))["levels"])
    assert len(levels) == 1000
    assert np.all(levels[20 : 2 * len(levels) // 3 - 20] > 80)
