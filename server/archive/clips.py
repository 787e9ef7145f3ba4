"""Clips to share: up to three minutes cut from a finished recording's access copy, faded
in and out, as an MP3 to download.

Three steps, each with the tool it suits:
1. PyAV decodes **only the excerpt**: it seeks to just before the start (a second of
   pre-roll, discarded, lets the MP3 decoder's bit reservoir settle) and stops decoding
   at the end, so a clip of a 40-minute conversation costs about as much as the clip.
2. pydub does the in-memory edit on those samples alone (at most three minutes of
   16-bit PCM, ~35 MB for stereo at 48 kHz): the fades. It is handed raw samples and
   gives raw samples back, so it never starts an ffmpeg binary, and it never sees the
   whole recording.
3. PyAV encodes the result (FFmpeg's `libmp3lame`, else its own AAC in an `.m4a` when
   that FFmpeg has no MP3 encoder).

Cutting runs in a thread, at most `CONCURRENT` at a time (`Clipper`).
"""

from __future__ import annotations

import asyncio
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from storyroom.finalize.mp3_encoder import pyav_has_libmp3lame

with warnings.catch_warnings():
    # pydub looks for an ffmpeg binary when it is imported and warns that there is none:
    # it is only ever given raw samples here, which need no binary. It also imports the
    # standard library's audioop, deprecated in 3.11-3.12 (which is what it fades with).
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from pydub import AudioSegment

CLIP_MAX_S = 180.0
CLIP_MIN_S = 1.0
FADE_S = 0.5
"""Fade in and out; a clip shorter than four fades gets fades of a quarter of it."""
PRE_ROLL_S = 1.0
CONCURRENT = 2
BIT_RATE = 128_000


@dataclass(frozen=True, slots=True)
class ClipRange:
    """Seconds on the recording's clock, checked against its length (`archive.protocol`)."""

    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class Clip:
    data: bytes
    content_type: str
    suffix: str
    seconds: float


def fade_ms(length_s: float) -> int:
    return int(min(FADE_S, length_s / 4) * 1000)


def decode_excerpt(path: Path, clip: ClipRange) -> tuple[np.ndarray, int, str]:
    """The samples of `clip` only, as packed 16-bit PCM: (array of shape (n, channels),
    sample rate, layout name)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        layout = stream.codec_context.layout.name
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        channels = len(stream.codec_context.layout.channels)
        first = round(clip.start_s * rate)
        last = round(clip.end_s * rate)
        seek_s = max(0.0, clip.start_s - PRE_ROLL_S)
        assert stream.time_base is not None
        container.seek(int(seek_s / stream.time_base), stream=stream, backward=True)
        pieces: list[np.ndarray] = []
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            at = round(float(frame.pts * stream.time_base) * rate)
            if at >= last:
                break
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1, channels)
                lo, hi = max(first - at, 0), min(last - at, len(samples))
                if hi > lo:
                    pieces.append(samples[lo:hi])
                at += len(samples)
    pcm = np.concatenate(pieces) if pieces else np.zeros((0, channels), np.int16)
    return pcm, rate, layout


def apply_fades(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Fade in and out with pydub, on these samples only."""
    channels = pcm.shape[1]
    segment = AudioSegment(
        data=np.ascontiguousarray(pcm, dtype="<i2").tobytes(),
        sample_width=2,
        frame_rate=rate,
        channels=channels,
    )
    ms = fade_ms(len(pcm) / rate)
    faded = segment.fade_in(ms).fade_out(ms)
    return np.frombuffer(faded.raw_data, dtype="<i2").reshape(-1, channels)


def encode(pcm: np.ndarray, rate: int, layout: str) -> tuple[bytes, str, str]:
    """(bytes, content type, file suffix): MP3, else AAC in M4A."""
    mp3 = pyav_has_libmp3lame()
    out = io.BytesIO()
    with av.open(out, "w", format="mp3" if mp3 else "ipod") as container:
        stream = container.add_stream("libmp3lame" if mp3 else "aac", rate=rate)
        stream.codec_context.layout = layout
        stream.codec_context.bit_rate = BIT_RATE
        step = 1152 * 8
        for start in range(0, len(pcm), step):
            block = np.ascontiguousarray(pcm[start : start + step]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue(), ("audio/mpeg" if mp3 else "audio/mp4"), ("mp3" if mp3 else "m4a")


def cut(path: Path, clip: ClipRange) -> Clip:
    """The clip, faded and encoded (blocking: run it in a thread)."""
    pcm, rate, layout = decode_excerpt(path, clip)
    data, content_type, suffix = encode(apply_fades(pcm, rate), rate, layout)
    return Clip(data, content_type, suffix, len(pcm) / rate)


class Clipper:
    """Cuts clips off the event loop, a few at a time. Owner: app.py (`Services.clipper`),
    shared by the staff and the participants' routes."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(CONCURRENT)

    async def cut(self, path: Path, clip: ClipRange) -> Clip:
        async with self._slots:
            return await asyncio.to_thread(cut, path, clip)
