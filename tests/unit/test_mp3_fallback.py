"""The access copy without LAME's library: FFmpeg's `libmp3lame` through PyAV makes the
same MP3 (the same frames, so the same loudness), and metadata.json says which encoder
ran. The fallback is forced the way a missing library would: the finder finds nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from storyroom.finalize import encoders, mp3_encoder
from storyroom.finalize.contracts import FinalizeError
from storyroom.finalize.mp3_encoder import Mp3Encoder
from storyroom.finalize.run import finalize_recording
from support.loudness import ebur128
from support.recordings import (
    RATE,
    Connection,
    Recording,
    SeatScript,
    finalize_input,
    make_recording,
    tone,
)


@pytest.fixture
def without_lame(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a system where LAME's library is neither bundled nor installed."""
    monkeypatch.setattr(mp3_encoder, "lame_library_path", lambda: None)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """8 s: a (440 Hz) and b (660 Hz), copied per case."""
    return make_recording(
        tmp_path_factory.mktemp("voices") / "rec_00000000000000aa",
        [
            SeatScript("a", [Connection(0.2, 8.0)], signal=tone(440, 0.3)),
            SeatScript("b", [Connection(0.2, 8.0)], signal=tone(660, 0.2, 0.5)),
        ],
        8.0,
    )


def test_the_finder_decides_which_encoder_runs(without_lame: None) -> None:
    assert mp3_encoder.available() is Mp3Encoder.PYAV
    assert isinstance(encoders.new_mp3_encoder(), encoders.PyAvMp3)
    assert "more slowly" in mp3_encoder.describe(Mp3Encoder.PYAV)


def test_without_any_mp3_encoder_finalizing_says_so(
    without_lame: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mp3_encoder, "pyav_has_libmp3lame", lambda: False)
    assert mp3_encoder.available() is None
    with pytest.raises(FinalizeError, match="no MP3 encoder"):
        encoders.new_mp3_encoder()


def test_the_fallback_makes_lames_frames() -> None:
    """Frame for frame the bytes LAME called directly makes, encoder delay included."""
    samples = 2 * RATE + 777
    t = np.arange(samples) / RATE
    planar = np.stack(
        [0.4 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 523 * t)]
    ).astype(np.float32)
    made: dict[str, list[bytes]] = {}
    for encoder in (encoders.Lame(), encoders.PyAvMp3()):
        frames: list[bytes] = []
        for start in range(0, samples, RATE):
            frames += encoder.encode(planar[:, start : start + RATE])
        frames += encoder.encode(None)
        encoder.close()
        made[encoder.name] = frames
        assert encoder.initial_padding == encoders.Lame.DELAY_PADDING + 576  # LAME's delay
    assert len(made[Mp3Encoder.LAME]) > samples // encoders.Lame.FRAME
    assert made[Mp3Encoder.PYAV] == made[Mp3Encoder.LAME]


def _finalize(recording: Recording, where: Path) -> tuple[Path, dict[str, object]]:
    path = where / recording.path.name
    shutil.copytree(recording.path, path)
    result = finalize_recording(path, finalize_input(recording), path.parent / "progress.json")
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["loudness"]["access"] == result.loudness.to_json()["access"]
    return path, metadata


def test_without_lame_the_access_copy_is_the_same_and_names_its_encoder(
    recording: Recording, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, direct_metadata = _finalize(recording, tmp_path / "lame")
    monkeypatch.setattr(mp3_encoder, "lame_library_path", lambda: None)
    fallback, metadata = _finalize(recording, tmp_path / "fallback")

    measured = ebur128(fallback / "access.mp3")
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)
    assert measured["true_peak"] <= -1.0
    access = metadata["loudness"]["access"]  # type: ignore[index]
    assert access["integrated_lufs"] == pytest.approx(measured["integrated"], abs=0.2)
    assert access["encoder"] == "pyav-libmp3lame"
    assert direct_metadata["loudness"]["access"]["encoder"] == "lame"  # type: ignore[index]
    assert (fallback / "access.mp3").read_bytes() == (direct / "access.mp3").read_bytes()
