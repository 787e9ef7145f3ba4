"""Loudness (EBU R128 / ITU-R BS.1770) and the true-peak limiter of the access copy.

The meter is FFmpeg's ``ebur128`` filter, fed block by block. The limiter keeps the
4x-oversampled ("true") peak at or under a ceiling with a look-ahead gain ramp; it
finds the peaks with short windowed-sinc interpolation filters, and only where a
block could come near the ceiling at all.
"""

from __future__ import annotations

import fractions
import math
from dataclasses import dataclass
from typing import Final

import av
import numpy as np

from storyroom.recording.timeline import SAMPLE_RATE

TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class LoudnessMeasurement:
    integrated_lufs: float | None
    """None for a programme too quiet to measure (below -70 LUFS)."""
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    """Only if the meter was asked to measure it."""


class LoudnessMeter:
    """Integrated loudness (EBU R128 / ITU-R BS.1770), loudness range and optionally true
    peak of stereo audio, by FFmpeg's ``ebur128`` filter, fed block by block."""

    def __init__(self, true_peak: bool = False) -> None:
        self.graph = av.filter.Graph()
        self.source = self.graph.add_abuffer(
            sample_rate=SAMPLE_RATE, format="fltp", layout="stereo", time_base=TIME_BASE
        )
        meter = self.graph.add("ebur128", "metadata=1" + (":peak=true" if true_peak else ""))
        self.sink = self.graph.add("abuffersink")
        self.source.link_to(meter)
        meter.link_to(self.sink)
        self.graph.configure()
        self.pts = 0
        self.values: dict[str, str] = {}

    def push(self, planar: np.ndarray) -> None:
        """(2, n) float32 samples."""
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(planar, dtype=np.float32), format="fltp", layout="stereo"
        )
        self.push_frame(frame)

    def push_frame(self, frame: av.AudioFrame) -> None:
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        frame.time_base = TIME_BASE
        self.pts += frame.samples
        self.source.push(frame)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                frame = self.sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            self.values.update(frame.metadata)

    def finish(self) -> LoudnessMeasurement:
        self.source.push(None)
        self._drain()

        def number(key: str) -> float | None:
            try:
                value = float(self.values[key])
            except (KeyError, ValueError):
                return None
            return value if math.isfinite(value) else None

        integrated = number("lavfi.r128.I")
        peak = number("lavfi.r128.true_peak")
        return LoudnessMeasurement(
            integrated_lufs=integrated if integrated is not None and integrated > -70 else None,
            loudness_range_lu=number("lavfi.r128.LRA"),
            true_peak_dbtp=db(peak) if peak is not None else None,
        )


def db(linear: float) -> float:
    """A linear gain or level in decibels (-inf for 0)."""
    return 20 * math.log10(linear) if linear > 0 else -math.inf


def _interpolation_phases() -> np.ndarray:
    """4x oversampling (BS.1770 annex 2 style): 12-tap windowed-sinc filters for the
    points 1/4, 2/4 and 3/4 of a sample past each sample, taps at offsets -5..6."""
    taps = np.arange(-5, 7)
    phases = []
    for fraction in (0.25, 0.5, 0.75):
        t = taps - fraction
        window = 0.5 * (1 + np.cos(np.pi * t / 6.5))
        h = np.sinc(t) * window
        phases.append(h / h.sum())
    return np.array(phases)


_PHASES: Final = _interpolation_phases()
_PHASES_32: Final = _PHASES.astype(np.float32)
_PHASE_GAIN: Final = float(np.abs(_PHASES).sum(axis=1).max())  # worst-case overshoot
_SUB: Final = 256  # samples per sub-block when looking for peaks


def sample_true_peaks(planar: np.ndarray, threshold: float) -> np.ndarray:
    """Per sample n, the largest |value| over channels of the 4x-oversampled signal in
    [n, n+1). Exact (to the filter) wherever the result can exceed `threshold`; elsewhere
    it is the sample's own level (then the true peak is below `threshold` anyway)."""
    level = np.abs(planar).max(axis=0)
    n = len(level)
    subs = -(-n // _SUB)
    padded = np.zeros(subs * _SUB, np.float32)
    padded[:n] = level
    hot = padded.reshape(subs, _SUB).max(axis=1) * _PHASE_GAIN > threshold
    if not hot.any():
        return level
    hot[1:] |= hot[:-1].copy()
    hot[:-1] |= hot[1:].copy()
    result = level.astype(np.float32, copy=True)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], hot.astype(np.int8), [0]))))
    for first, last in zip(edges[::2], edges[1::2], strict=True):
        a, b = first * _SUB, min(last * _SUB, n)
        lo, hi = max(a - 5, 0), min(b + 6, n)
        for channel in planar:
            x = np.pad(channel[lo:hi], (5 - (a - lo), 6 - (hi - b)))
            for phase in _PHASES_32:
                y = np.abs(np.correlate(x, phase, mode="valid"))
                np.maximum(result[a:b], y, out=result[a:b])
    return result


def _window_min(values: np.ndarray, back: int, ahead: int) -> np.ndarray:
    """min(values[k - back .. k + ahead]) for each k (van Herk / Gil-Werman)."""
    width = back + ahead + 1
    n = len(values)
    tail = -(back + n + ahead) % width
    padded = np.concatenate((np.ones(back), values, np.ones(ahead + tail)))
    rows = padded.reshape(-1, width)
    prefix = np.minimum.accumulate(rows, axis=1).ravel()
    suffix = np.minimum.accumulate(rows[:, ::-1], axis=1)[:, ::-1].ravel()
    return np.minimum(suffix[:n], prefix[width - 1 : width - 1 + n])


class TruePeakLimiter:
    """Look-ahead limiter keeping the 4x-oversampled peak at or under `ceiling_db`.

    The gain is min(1, ceiling / peak) held for `HOLD` samples after each peak and
    ramped over `LOOKAHEAD` samples (a moving average of the held minimum, which never
    exceeds the gain a peak needs). Stateless between blocks apart from the context it
    keeps, so the result does not depend on the block size. :meth:`process` returns the
    previous block, limited; :meth:`flush` the last one.
    """

    LOOKAHEAD: Final = 480  # 10 ms
    HOLD: Final = 1920  # 40 ms

    def __init__(self, ceiling_db: float) -> None:
        self.ceiling = 10 ** (ceiling_db / 20)
        self.before = np.zeros((2, self.LOOKAHEAD + self.HOLD + 8), np.float32)
        self.pending: np.ndarray | None = None
        self.limited_samples = 0
        self.max_reduction_db = 0.0

    def process(self, block: np.ndarray) -> np.ndarray | None:
        pending, self.pending = self.pending, block
        return None if pending is None else self._limit(pending, block)

    def flush(self) -> np.ndarray | None:
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        return self._limit(pending, np.zeros((2, 0), np.float32))

    def _limit(self, current: np.ndarray, following: np.ndarray) -> np.ndarray:
        ahead = self.LOOKAHEAD + 8
        after = following[:, :ahead]
        if after.shape[1] < ahead:
            after = np.pad(after, ((0, 0), (0, ahead - after.shape[1])))
        x = np.concatenate((self.before, current, after), axis=1)
        keep = self.before.shape[1]
        self.before = x[:, -keep - ahead : -ahead].copy() if current.shape[1] else self.before
        n = current.shape[1]
        peaks = sample_true_peaks(x, self.ceiling)
        if peaks.max() <= self.ceiling:
            return current
        need = np.minimum(1.0, self.ceiling / np.maximum(peaks, 1e-12))
        a, hold = self.LOOKAHEAD, self.HOLD
        start = keep  # index of current[0] in x
        # held[k] for k in [start - a, start + n): windows need need[k - hold .. k + a]
        held = _window_min(need[start - a - hold : start + n + a], hold, a)[hold : hold + a + n]
        sums = np.concatenate(([0.0], np.cumsum(held)))
        gain = (sums[a + 1 : a + 1 + n] - sums[:n]) / (a + 1)
        reduced = gain < 1.0
        if reduced.any():
            self.limited_samples += int(reduced.sum())
            self.max_reduction_db = max(self.max_reduction_db, -db(float(gain.min())))
        return (current * gain.astype(np.float32)).astype(np.float32)
