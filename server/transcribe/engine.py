"""Transcribing one voice, in the worker process: decode its finalized stem, bring it to
a steady level, keep the speech (Silero VAD) and run Whisper on it with word times.

Blocking and CPU-bound; the job runs it in a low-priority worker process, never on the
event loop. faster-whisper is imported here only, so the server never loads it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from storyroom.transcribe import model
from storyroom.transcribe.contracts import TranscribeError, VoiceInput, VoiceTranscript, Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

SAMPLE_RATE: Final = 16_000
FRAME: Final = 480  # 30 ms at 16 kHz
TARGET_LEVEL: Final = 0.1
"""-20 dBFS: the loud frames of a voice are brought near this."""
MAX_GAIN: Final = 1000.0
"""+60 dB at most: a very quiet voice (-65 dBFS) is lifted, noise is not made speech."""
SILENCE: Final = 1e-4
"""A voice whose peak stays under -80 dBFS said nothing."""
PEAK_CEILING: Final = 0.99
WINDOW_S: Final = 300
"""A long track is transcribed five minutes at a time (VAD and Whisper's buffers grow
with the audio handed to them: 1.6 GB for a 40-minute track in one piece)."""
CUT_SEARCH_S: Final = 10

_loaded: dict[str, WhisperModel] = {}


def prepare_worker() -> None:
    """In the worker process, once: low priority, and nothing may reach a model hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.nice(10)


def load(cache_root: Path) -> WhisperModel:
    """The model, assembled and checked (see :mod:`.model`), loaded once per process."""
    directory = model.model_dir(cache_root)
    key = str(directory)
    if key not in _loaded:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from faster_whisper import WhisperModel

        _loaded[key] = WhisperModel(key, device="cpu", compute_type="int8", cpu_threads=1)
    return _loaded[key]


def decode(path: Path) -> np.ndarray:
    """The stem as mono float32 at 16 kHz, decoded a frame at a time into one growing
    array (no list of chunks beside it); a stem that cannot be read raises
    :class:`TranscribeError`."""
    import av

    if not path.exists():
        raise TranscribeError(f"{path.name} is missing")
    if path.stat().st_size == 0:
        raise TranscribeError(f"{path.name} is empty")
    try:
        with av.open(str(path)) as container:
            expected = (container.duration or 0) * SAMPLE_RATE // 1_000_000
            audio = np.zeros(max(int(expected), SAMPLE_RATE) + SAMPLE_RATE, dtype=np.float32)
            used = 0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1)
                    if used + block.size > audio.size:
                        audio = np.resize(audio, max(audio.size * 2, used + block.size))
                    audio[used : used + block.size] = block
                    used += block.size
    except Exception as exc:  # PyAV's errors for a damaged or foreign file
        # its message names the full path: the reason is shown to staff
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise TranscribeError(f"{path.name} could not be decoded ({why})") from exc
    return audio[:used]


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    """RMS of each 30 ms frame, computed a window at a time (no float64 copy of it all)."""
    usable = audio[: audio.size - audio.size % FRAME].reshape(-1, FRAME)
    step = WINDOW_S * SAMPLE_RATE // FRAME
    return np.concatenate(
        [
            np.sqrt(np.mean(np.square(usable[i : i + step], dtype=np.float64), axis=1))
            for i in range(0, len(usable), step)
        ]
        or [np.zeros(0)]
    )


def level_gain(audio: np.ndarray) -> float | None:
    """The gain that brings the voice's loud frames near -20 dBFS (peaks kept under full
    scale); None for a voice that is silent throughout. Whisper's long-form decoding
    broke down on very quiet tracks (-65 dBFS) until they were lifted first."""
    if audio.size == 0:
        return None
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE:
        return None
    rms = _frame_rms(audio) if audio.size >= FRAME else np.array([peak])
    loud = float(np.percentile(rms, 95))
    return min(TARGET_LEVEL / max(loud, 1e-9), PEAK_CEILING / peak, MAX_GAIN)


def normalise(audio: np.ndarray) -> np.ndarray | None:
    """`audio` brought to its level (:func:`level_gain`), or None if silent."""
    gain = level_gain(audio)
    return None if gain is None else audio * np.float32(gain)


def windows(audio: np.ndarray) -> list[tuple[int, int]]:
    """The track in pieces of about WINDOW_S, each cut at the quietest 30 ms of its last
    CUT_SEARCH_S (between words, not inside one), so memory stays flat in duration."""
    size = WINDOW_S * SAMPLE_RATE
    out: list[tuple[int, int]] = []
    start = 0
    while audio.size - start > size + CUT_SEARCH_S * SAMPLE_RATE:
        search = audio[start + size - CUT_SEARCH_S * SAMPLE_RATE : start + size]
        rms = _frame_rms(search)
        cut = start + size - CUT_SEARCH_S * SAMPLE_RATE + int(np.argmin(rms)) * FRAME
        out.append((start, cut))
        start = cut
    out.append((start, audio.size))
    return out


def transcribe_voice(voice: VoiceInput, cache_root: str) -> VoiceTranscript:
    """One voice's words on the recording clock (its stem starts at the recording's 0)."""
    started = time.process_time()
    whisper = load(Path(cache_root))
    audio = decode(Path(voice.stem))
    gain = level_gain(audio)
    if gain is None:
        return VoiceTranscript(voice.seat, (), time.process_time() - started, 0.0)
    words: list[Word] = []
    speech = 0.0
    for begin, end in windows(audio):
        offset = begin / SAMPLE_RATE
        segments, info = whisper.transcribe(
            audio[begin:end] * np.float32(gain),
            language=voice.language,
            task="transcribe",
            word_timestamps=True,
            vad_filter=True,
            beam_size=5,
            condition_on_previous_text=False,
        )
        words += [_word(w, offset) for segment in segments for w in (segment.words or ())]
        speech += float(getattr(info, "duration_after_vad", 0.0) or 0.0)
    return VoiceTranscript(
        voice.seat, tuple(w for w in words if w.text), time.process_time() - started, speech
    )


def _word(w: Any, offset: float) -> Word:
    return Word(
        start=round(offset + float(w.start), 3),
        end=round(offset + float(w.end), 3),
        text=str(w.word).strip(),
        confidence=round(float(w.probability), 3),
    )
