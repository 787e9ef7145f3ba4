"""A small waveform of a recording: a picture (SVG) with the cued questions marked, for
the staff pages, and the same levels as numbers (JSON) for the players of the copy page
and the public listening page, which draw it at their own width.

:class:`WaveformPeaks` collects the peak level per column while the audio streams past
in blocks (finalization already has every sample in hand, so this costs no decoding);
:func:`waveform_svg` draws it and :func:`waveform_json` writes it. SVG needs no imaging
library and stays sharp at any size.

Recordings finalized before `waveform.json` existed get their levels from the access
copy instead (:func:`levels_from_audio`): decoded frame by frame, never whole.

`waveform.json`: `{"version": 1, "duration_s": float, "levels": [int 0..100, ...]}`,
one level per column across the whole recording, on the picture's scale (dB above
-48 dBFS, so quiet speech shows).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import av
import numpy as np

__all__ = ["WaveformPeaks", "levels_from_audio", "waveform_json", "waveform_svg"]

FLOOR_DB = -48.0
JSON_VERSION = 1


class WaveformPeaks:
    """Peak absolute level per column over `total` samples, fed in order by blocks."""

    def __init__(self, total: int, columns: int = 1000) -> None:
        self.total = max(total, 1)
        self.columns = max(1, min(columns, self.total))
        self.peaks = np.zeros(self.columns, dtype=np.float32)
        self._position = 0

    def add(self, samples: np.ndarray) -> None:
        """Next block of samples: shape (n,) or (channels, n)."""
        level = np.abs(samples) if samples.ndim == 1 else np.abs(samples).max(axis=0)
        n = len(level)
        if not n:
            return
        start = self._position
        self._position += n
        # column of each sample = position * columns // total; reduce where it changes
        first = start * self.columns // self.total
        last = (start + n - 1) * self.columns // self.total
        bounds = [0]
        for column in range(first + 1, last + 1):
            bounds.append(-(-column * self.total // self.columns) - start)
        maxima = np.maximum.reduceat(level, bounds)
        columns = np.arange(first, last + 1)
        self.peaks[columns] = np.maximum(self.peaks[columns], maxima)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def levels(peaks: np.ndarray) -> np.ndarray:
    """Peaks on the drawing scale: 0 at `FLOOR_DB` and below, 1 at full scale."""
    with np.errstate(divide="ignore"):
        db = 20 * np.log10(np.maximum(peaks.astype(np.float64), 1e-9))
    return np.asarray(np.clip((db - FLOOR_DB) / -FLOOR_DB, 0.0, 1.0))


def waveform_json(peaks: np.ndarray, duration_s: float) -> str:
    """The levels for players that draw the waveform themselves (a few kB)."""
    document = {
        "version": JSON_VERSION,
        "duration_s": round(duration_s, 3),
        "levels": [round(float(v) * 100) for v in levels(peaks)],
    }
    return json.dumps(document, separators=(",", ":")) + "\n"


def levels_from_audio(path: Path, duration_s: float, block_s: float = 1.0) -> str:
    """`waveform.json` for an encoded recording (the access copy) of `duration_s`, its
    peaks taken from the decoded samples as they stream past: about `block_s` of audio
    is held at a time, never the whole file. Blocking: run it in a thread."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        total = max(1, round(duration_s * rate))
        peaks = WaveformPeaks(total)
        seen = 0
        held: list[np.ndarray] = []
        held_n = 0

        def flush() -> None:
            nonlocal held_n
            if held:
                peaks.add(np.concatenate(held, axis=1))
                held.clear()
                held_n = 0

        # planar floats whatever the decoder gives: (channels, n), full scale at 1.0
        planar = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        for decoded in container.decode(stream):
            for frame in planar.resample(decoded):
                samples = frame.to_ndarray()
                keep = min(samples.shape[1], total - seen)  # a decoder may run long
                if keep > 0:
                    held.append(samples[:, :keep])
                    held_n += keep
                    seen += keep
                if held_n >= block_s * rate:
                    flush()
        flush()
    return waveform_json(peaks.peaks, duration_s)


def waveform_svg(
    peaks: np.ndarray,
    duration_s: float,
    cues: list[tuple[float, str]],
    width: int = 1000,
    height: int = 120,
) -> str:
    """Symmetric peak envelope (dB-scaled so quiet speech shows) with a line and a
    number at each cue; hovering a line shows the question."""
    level = levels(peaks)
    middle = height / 2
    step = width / max(len(level), 1)
    top = " ".join(f"{i * step:.1f},{middle - v * (middle - 2):.1f}" for i, v in enumerate(level))
    bottom = " ".join(
        f"{i * step:.1f},{middle + v * (middle - 2):.1f}"
        for i, v in reversed(list(enumerate(level)))
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Waveform with question cues">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<polygon points="{top} {bottom}" fill="#3b6ea5"/>',
        f'<line x1="0" y1="{middle}" x2="{width}" y2="{middle}" stroke="#3b6ea5" '
        'stroke-width="0.5"/>',
    ]
    for number, (at, title) in enumerate(cues, 1):
        x = width * min(max(at / duration_s, 0.0), 1.0) if duration_s > 0 else 0.0
        parts.append(
            f"<g><title>{escape(f'{number}. {_clock(at)} {title}')}</title>"
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#c0392b" '
            f'stroke-width="1.5"/>'
            f'<text x="{x + 2:.1f}" y="11" font-family="sans-serif" font-size="10" '
            f'fill="#c0392b">{number}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
