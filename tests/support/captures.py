"""Browser captures written as the upload path stores them (storyroom.capture.layout):
a known signal encoded by PyAV into a WebM or Ogg Opus container, as MediaRecorder
would, cut into ~1 s byte chunks appended to `<NN>.<ext>` with one index line each."""

from __future__ import annotations

import fractions
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import av
import numpy as np

from storyroom.capture import layout

RATE = 48_000
LAG_SLACK = 12
"""Samples (0.25 ms) either way that :func:`match_at` also tries."""
MIMES = {"webm": "audio/webm;codecs=opus", "ogg": "audio/ogg;codecs=opus"}


def encode_capture(samples: np.ndarray, container: str = "webm", bitrate: int = 128_000) -> bytes:
    """`samples` (mono float at 48 kHz) as an Opus file in `container`."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        stream: Any = muxer.add_stream("libopus", rate=RATE)
        stream.layout = "mono"
        stream.bit_rate = bitrate
        frame_size = 960
        total = len(samples) // frame_size * frame_size
        for start in range(0, total, frame_size):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[None, start : start + frame_size], np.float32),
                format="flt",
                layout="mono",
            )
            frame.sample_rate = RATE
            frame.pts = start
            frame.time_base = fractions.Fraction(1, RATE)
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return out.getvalue()


def drifted(samples: np.ndarray, ppm: float) -> np.ndarray:
    """`samples` as a clock running `ppm` parts per million fast would have sampled
    them (more samples for the same stretch of time when positive); linear
    interpolation, a minute at a time."""
    rate = 1 + ppm * 1e-6
    count = int(len(samples) * rate)
    out = np.empty(count, np.float32)
    step = 60 * RATE
    for start in range(0, count, step):
        positions = np.arange(start, min(count, start + step)) / rate
        low = int(positions[0])
        piece = samples[low : int(positions[-1]) + 2]
        out[start : start + len(positions)] = np.interp(
            positions - low, np.arange(len(piece)), piece
        )
    return out


def write_run(
    recording_dir: Path,
    seat: str,
    run: int,
    media: bytes,
    rec_start: float,
    container: str = "webm",
    chunk_bytes: int = 16_000,
    close: bool = True,
    server_start: float = 0.0,
) -> Path:
    """Store `media` as capture run `run` of `seat`, chunk by chunk, with its index."""
    mime = MIMES[container]
    path = layout.run_media(recording_dir, seat, run, mime)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = [
        {
            "type": "open",
            "mime": mime,
            "rec_start": rec_start,
            "server_start": server_start,
            "at": 0,
        }
    ]
    with open(path, "wb") as f:
        for seq, offset in enumerate(range(0, len(media), chunk_bytes)):
            chunk = media[offset : offset + chunk_bytes]
            f.write(chunk)
            lines.append(
                {
                    "type": "chunk",
                    "seq": seq,
                    "offset": offset,
                    "size": len(chunk),
                    "sha256": hashlib.sha256(chunk).hexdigest(),
                    "at": seq,
                }
            )
    if close:
        count = len(lines) - 1
        lines.append({"type": "close", "chunks": count, "bytes": len(media), "at": count})
    layout.run_index(recording_dir, seat, run).write_text(
        "".join(json.dumps(line) + "\n" for line in lines)
    )
    return path


def lag_of(
    stem: np.ndarray, reference: np.ndarray, seconds: tuple[float, float], most_s: float = 0.05
) -> int:
    """Samples by which `stem` lags `reference` over `seconds` (0 to `most_s`)."""
    a, b = (round(s * RATE) for s in seconds)
    most = round(most_s * RATE)
    x, y = stem[a:b].astype(np.float64), reference[max(0, a - most) : b].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    start = a - max(0, a - most)  # corr[k]: x against y from k, i.e. lag start - k
    return int(start - np.argmax(corr[: start + 1]))


def match_at(stem: np.ndarray, reference: np.ndarray, second: int, lag: int) -> float:
    """How well one second of `stem` follows `reference` (normalised correlation), at
    `lag` or up to LAG_SLACK from it: two Opus encoders at different bitrates delay
    the bands of a voice a little differently, so the server's and the browser's copies
    of one voice line up best a few samples apart (their placement is checked apart)."""
    a = second * RATE
    x = stem[a : a + RATE]
    return max(
        float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
        for shift in range(-LAG_SLACK, LAG_SLACK + 1)
        if len(y := reference[a - lag - shift : a + RATE - lag - shift]) == RATE
    )


def locate(window: np.ndarray, source: np.ndarray) -> tuple[int, float]:
    """Where `window` best matches a stretch of `source`: that stretch's first sample,
    and the normalised correlation there (1.0: the same waveform, at any level)."""
    src = source.astype(np.float64)
    w = window.astype(np.float64) - window.mean()
    n = len(w)
    size = 1 << int(np.ceil(np.log2(len(src) + n)))
    corr = np.fft.irfft(np.fft.rfft(src, size) * np.conj(np.fft.rfft(w, size)), size)
    corr = corr[: len(src) - n + 1]
    energy = np.cumsum(np.concatenate([[0.0], src**2]))
    sums = np.cumsum(np.concatenate([[0.0], src]))
    local = (energy[n:] - energy[:-n]) - (sums[n:] - sums[:-n]) ** 2 / n
    scores = corr / (np.sqrt(np.maximum(local, 1e-12)) * (np.linalg.norm(w) + 1e-12))
    best = int(np.argmax(scores))
    return best, float(scores[best])
