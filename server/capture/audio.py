"""A capture run's audio: decoded once to raw 16-bit PCM on disk, read back by range.

Only the bytes the run's index vouches for (:attr:`CaptureRun.bytes`) are read: a torn
tail beyond them is never trusted. FFmpeg (through PyAV) demuxes whatever container
the browser's MediaRecorder chose (WebM, Ogg or MP4 with Opus) and decodes it to 48 kHz
mono; decoding stops at the first damaged packet and keeps what came before. Samples
are stored as 16-bit integers: the capture is itself Opus-coded audio, whose own noise
lies far above 16-bit quantisation, and a 40-minute run is then 230 MB of temporary
file rather than 460.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Final

import av
import numpy as np

from storyroom.capture.layout import CaptureRun

RATE: Final = 48_000
_SCALE: Final = 32767.0


class CaptureUnreadable(Exception):
    """The run's media holds no decodable audio; the message says why in plain words."""


class PcmFile:
    """Mono 16-bit samples in a raw file, written in order, read back by range (zeros
    outside what was written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples = 0
        self._out: io.BufferedWriter | None = open(path, "xb")

    def append(self, pcm: np.ndarray) -> None:
        assert self._out is not None
        clipped = np.clip(np.asarray(pcm, np.float32) * _SCALE, -32768, 32767)
        self._out.write(np.rint(clipped).astype("<i2").tobytes())
        self.samples += len(pcm)

    def finish(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count) as float32, zeros where nothing was written."""
        out = np.zeros(max(0, count), np.float32)
        low, high = max(0, start), min(self.samples, start + count)
        if high > low:
            with open(self.path, "rb") as f:
                f.seek(low * 2)
                raw = np.frombuffer(f.read((high - low) * 2), "<i2")
            out[low - start : low - start + len(raw)] = raw / np.float32(_SCALE)
        return out

    def close(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


def decode_run(run: CaptureRun, out: PcmFile) -> None:
    """Decode `run`'s vouched-for bytes into `out` (48 kHz mono). Raises
    :class:`CaptureUnreadable` when nothing decodes at all."""
    try:
        with open(run.media, "rb") as f:
            data = f.read(run.bytes)
    except OSError as error:
        raise CaptureUnreadable(f"the capture file cannot be read ({error.strerror})") from error
    if len(data) < run.bytes:
        raise CaptureUnreadable(
            f"the capture file is shorter ({len(data)} bytes) than its index says ({run.bytes})"
        )
    if not data:
        raise CaptureUnreadable("the capture has no chunks")
    try:
        _decode(data, out)
    except (av.FFmpegError, ValueError) as error:
        if not out.samples:
            raise CaptureUnreadable(f"the capture is not readable audio ({error})") from error
    finally:
        out.finish()
    if not out.samples:
        raise CaptureUnreadable("the capture holds no audio")


def _decode(data: bytes, out: PcmFile) -> None:
    """Everything up to the first error (which is raised after what came before is kept)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    container: Any = av.open(io.BytesIO(data), mode="r")
    try:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            for frame in packet.decode():
                for converted in resampler.resample(frame):
                    out.append(converted.to_ndarray().reshape(-1))
        for converted in resampler.resample(None):
            out.append(converted.to_ndarray().reshape(-1))
    finally:
        container.close()
