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
    """The stem as mono float32 at 16 kHz; a stem that cannot be read raises
    :class:`TranscribeError`."""
    from faster_whisper.audio import decode_audio

    if not path.exists():
        raise TranscribeError(f"{path.name} is missing")
    if path.stat().st_size == 0:
        raise TranscribeError(f"{path.name} is empty")
    try:
        audio: np.ndarray = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV's errors for a damaged or foreign file
        # its message names the full path: the reason is shown to staff
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise TranscribeError(f"{path.name} could not be decoded ({why})") from exc
    return audio.astype(np.float32, copy=False)


def normalise(audio: np.ndarray) -> np.ndarray | None:
    """`audio` with its loud frames near -20 dBFS (peaks kept under full scale); None
    for a voice that is silent throughout. Whisper's long-form decoding broke down on
    very quiet tracks (-65 dBFS) until they were lifted first."""
    if audio.size == 0:
        return None
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE:
        return None
    usable = audio[: audio.size - audio.size % FRAME] if audio.size >= FRAME else audio
    frames = usable.reshape(-1, FRAME) if usable.size >= FRAME else usable.reshape(1, -1)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    loud = float(np.percentile(rms, 95))
    gain = min(TARGET_LEVEL / max(loud, 1e-9), PEAK_CEILING / peak, MAX_GAIN)
    return (audio * np.float32(gain)).astype(np.float32, copy=False)


def transcribe_voice(voice: VoiceInput, cache_root: str) -> VoiceTranscript:
    """One voice's words on the recording clock (its stem starts at the recording's 0)."""
    started = time.process_time()
    whisper = load(Path(cache_root))
    audio = normalise(decode(Path(voice.stem)))
    if audio is None:
        return VoiceTranscript(voice.seat, (), time.process_time() - started, 0.0)
    segments, info = whisper.transcribe(
        audio,
        language=voice.language,
        task="transcribe",
        word_timestamps=True,
        vad_filter=True,
        beam_size=5,
        condition_on_previous_text=False,
    )
    words = [_word(w) for segment in segments for w in (segment.words or ())]
    speech = float(getattr(info, "duration_after_vad", 0.0) or 0.0)
    return VoiceTranscript(
        voice.seat, tuple(w for w in words if w.text), time.process_time() - started, speech
    )


def _word(w: Any) -> Word:
    return Word(
        start=round(float(w.start), 3),
        end=round(float(w.end), 3),
        text=str(w.word).strip(),
        confidence=round(float(w.probability), 3),
    )
