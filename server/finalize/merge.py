"""Merging a seat's browser capture into its server stem: every stretch the server did
not receive (a gap, an outage, concealed packets) is taken from the browser's own
recording of the same microphone.

For a seat with capture runs (:mod:`storyroom.capture.layout`), :meth:`SeatMerge.prepare`

1. decodes the seat's server stem once, as pass 1 will, noting which timeline samples
   hold received audio and where the decoder concealed or silenced lost packets
   (FEC-recovered packets count as received): the *damaged ranges*;
2. decodes each run (:mod:`storyroom.capture.audio`);
3. aligns each run to the server stem by normalised cross-correlation of
   :data:`WINDOW_S` windows every :data:`POINT_STEP_S` along the take, only where the
   server stem holds mostly received, audible audio (damaged samples zeroed), searching :data:`SEARCH_S` either side of
   the run's `rec_start` hint. The browser's audio clock drifts from the room's, and a
   pause stops the room clock and the browser's recorder at slightly different moments,
   so the points are fitted (least squares, the worst point dropped while any is off by
   more than :data:`OUTLIER_S`) to `capture sample = a_k + (1 + drift) * timeline sample`:
   one drift for the run, one offset `a_k` per stretch between pauses;
4. assigns each damaged range (split at pauses) to the first run that is aligned in its
   stretch and holds its audio.

Then :meth:`SeatMerge.blocks` takes pass 1's (or pass 2's) blocks of the server stem and
replaces each assigned range by the capture, resampled to the room clock (windowed
sinc), with :data:`CROSSFADE_S` raised-cosine crossfades either side. A run that cannot
be read or aligned is not used, and the report says why; the server stem is then kept as
it is. A seat without capture runs never gets a :class:`SeatMerge`: its outputs are
exactly what they would be without this module.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from storyroom.capture import layout as capture_layout
from storyroom.capture.audio import CaptureUnreadable, PcmFile, decode_run
from storyroom.capture.layout import CaptureRun
from storyroom.finalize.decode import VoiceStats, seat_blocks
from storyroom.finalize.plan import BLOCK, Plan, SeatPlan
from storyroom.recording import layout
from storyroom.recording.timeline import SAMPLE_RATE

CROSSFADE_S: Final = 0.005
RECOVERY_S: Final = 0.1
"""After a concealed or missing stretch the decoder's energy takes a few frames to come
back (measured: ~80 ms some 10 dB low after one lost packet): this much after each
damaged range is damaged too."""
POINT_STEP_S: Final = 30.0
WINDOW_S: Final = 2.0
SEARCH_S: Final = 2.0
"""How far (either way) from its hint a run's audio is looked for."""
MIN_LEVEL_DBFS: Final = -45.0
"""A window of the server stem quieter than this is not used to align."""
MIN_MATCH: Final = 0.6
"""Normalised correlation a point needs (the same voice through two Opus encoders
scores above 0.9; another voice or noise below 0.3)."""
MIN_MATCHED: Final = 0.5
"""Share of the places looked at (when there were at least 4) where a run must be
found: one chance match among many misses is not the seat's voice."""
OUTLIER_S: Final = 0.002
MIN_DRIFT_SPAN_S: Final = 20.0
"""Points spanning less than this fit an offset only (the drift is taken as 0)."""
MAX_DRIFT_PPM: Final = 1000.0
MIN_POINTS: Final = 12
"""A run shorter than MIN_POINTS * POINT_STEP_S is measured at least this often."""
MIN_RECEIVED: Final = 0.8
"""Share of a window the server must have received for it to be used."""
SLIDE_S: Final = 1.0
SLIDES: Final = 10
"""A point whose window is damaged or quiet moves on by SLIDE_S, at most SLIDES times."""

log = logging.getLogger(__name__)

_XFADE: Final = round(CROSSFADE_S * SAMPLE_RATE)
_WINDOW: Final = round(WINDOW_S * SAMPLE_RATE)
_SEARCH: Final = round(SEARCH_S * SAMPLE_RATE)
_HALF_TAPS: Final = 8
_TAPS: Final = np.arange(-_HALF_TAPS + 1, _HALF_TAPS + 1)
_MIN_ENERGY: Final = 10 ** (MIN_LEVEL_DBFS / 10) * _WINDOW

Span = tuple[int, int]
"""Timeline samples [start, end)."""


@dataclass(frozen=True, slots=True)
class Point:
    """One measured correspondence: timeline sample `t` is capture sample `n`."""

    t: int
    n: float
    piece: int
    match: float
    gain: float


@dataclass(slots=True)
class RunMerge:
    """One capture run: its audio, how it maps onto the room clock, what it filled."""

    run: CaptureRun
    source: str
    """The run's media file, relative to the recording directory."""
    pcm: PcmFile | None = None
    reason: str | None = None
    """Why the run is not used (None: it is)."""
    drift: float = 0.0
    offsets: dict[int, float] = field(default_factory=dict)
    """Piece → capture sample at timeline sample 0 (`a_k`)."""
    gain: float = 1.0
    points: int = 0
    rejected: int = 0
    residual_s: float = 0.0
    filled: int = 0

    @property
    def used(self) -> bool:
        return self.reason is None and bool(self.offsets)

    def position(self, t: np.ndarray, piece: int) -> np.ndarray:
        return self.offsets[piece] + (1.0 + self.drift) * t.astype(np.float64)

    def covers(self, piece: int) -> Span | None:
        """Timeline samples of `piece`'s mapping whose capture audio (with the
        interpolation's taps and a crossfade either side) is inside the run."""
        if piece not in self.offsets or self.pcm is None:
            return None
        margin = _HALF_TAPS + _XFADE * 1.01 + 1
        rate = 1.0 + self.drift
        low = (margin - self.offsets[piece]) / rate
        high = (self.pcm.samples - margin - self.offsets[piece]) / rate
        return int(np.ceil(low)), int(np.floor(high))

    def samples(self, t0: int, t1: int, piece: int) -> np.ndarray:
        """The capture at timeline samples [t0, t1), resampled to the room clock."""
        assert self.pcm is not None
        out = np.empty(t1 - t0, np.float32)
        for start in range(t0, t1, BLOCK):
            t = np.arange(start, min(t1, start + BLOCK))
            p = self.position(t, piece)
            whole = np.floor(p).astype(np.int64)
            frac = p - whole
            first = int(whole[0]) + int(_TAPS[0])
            raw = self.pcm.read(first, int(whole[-1] - whole[0]) + len(_TAPS))
            x = _TAPS[None, :] - frac[:, None]
            weights = np.sinc(x) * (0.5 + 0.5 * np.cos(np.pi * x / _HALF_TAPS))
            weights /= weights.sum(axis=1, keepdims=True)
            index = (whole - whole[0])[:, None] + np.arange(len(_TAPS))[None, :]
            out[start - t0 : start - t0 + len(t)] = (raw[index] * weights).sum(axis=1)
        return out * np.float32(self.gain)

    def to_json(self, pieces: list[Span]) -> dict[str, Any]:
        return {
            "file": self.source,
            "used": self.used,
            "reason": self.reason,
            "closed": self.run.closed,
            "captured_s": round(self.pcm.samples / SAMPLE_RATE, 3) if self.pcm else 0.0,
            "offset_s": (
                {
                    f"{pieces[k][0] / SAMPLE_RATE:.3f}": round(-a / SAMPLE_RATE, 4)
                    for k, a in sorted(self.offsets.items())
                }
                if self.offsets
                else None
            ),
            "drift_ppm": round(self.drift * 1e6, 2) if self.offsets else None,
            "gain_db": round(20 * np.log10(self.gain), 2) if self.offsets else None,
            "points": self.points,
            "rejected_points": self.rejected,
            "residual_ms": round(self.residual_s * 1000, 3) if self.offsets else None,
            "filled_s": round(self.filled / SAMPLE_RATE, 3),
        }


@dataclass(frozen=True, slots=True)
class Fill:
    start: int
    end: int
    run: RunMerge
    piece: int


def pieces_of(plan: Plan) -> list[Span]:
    """The take's stretches between pauses, on the timeline."""
    cuts = sorted({round(p.rec_time * SAMPLE_RATE) for p in plan.pauses} - {0})
    edges = [0, *(c for c in cuts if 0 < c < plan.total), plan.total]
    return list(itertools.pairwise(edges))


def damaged_ranges(
    covered: Iterable[Span], stats: VoiceStats, total: int, recovery_s: float = RECOVERY_S
) -> list[Span]:
    """Where the server stem holds no received audio: outside what was decoded, and
    where the decoder concealed or silenced lost packets, each with the `recovery_s`
    after it. Ranges closer together than two crossfades are joined."""
    spans: list[Span] = []
    cursor = 0
    recovery = round(recovery_s * SAMPLE_RATE)
    for start, end in sorted(covered):
        if start > cursor:
            spans.append((cursor, min(total, start + recovery)))
        cursor = max(cursor, end)
    if cursor < total:
        spans.append((cursor, total))
    for loss in stats.losses:
        if loss.plc or loss.silent:
            start = max(0, round(loss.start_s * SAMPLE_RATE))
            end = min(total, round(loss.end_s * SAMPLE_RATE) + recovery)
            if end > start:
                spans.append((start, end))
    joined: list[list[int]] = []
    for start, end in sorted(spans):
        if joined and start <= joined[-1][1] + 2 * _XFADE:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return [(a, b) for a, b in joined]


class SeatMerge:
    """One seat's capture runs, prepared against its server stem and applied to its
    blocks. Owner: the finalization (closed, with its temporary files, at its end)."""

    def __init__(
        self, root: Path, seat: SeatPlan, runs: list[CaptureRun], pieces: list[Span], total: int
    ) -> None:
        self.root = root
        self.seat = seat
        self.pieces = pieces
        self.total = total
        self.runs = [
            RunMerge(run, run.media.relative_to(root).as_posix())
            if run.media.is_relative_to(root)
            else RunMerge(run, run.media.name)
            for run in runs
        ]
        self.damaged: list[Span] = []
        self._concealed: list[Span] = []
        self.fills: list[Fill] = []
        self._ends: list[int] = []
        self._server: PcmFile | None = None
        self._tried = 0
        """Places where a run was looked for (the server's audio was usable)."""
        self.prepared = False

    def _temp(self, name: str) -> Path:
        # hidden and .part: never listed, and removed by the next finalization if left
        return self.root / f".merge-{self.seat.seat}-{name}.pcm{layout.PART_SUFFIX}"

    def prepare(self) -> None:
        """Decode, align and assign (see the module docstring). Blocking, CPU-bound;
        call after the seat's stems are scanned."""
        if self.prepared:
            return
        self.prepared = True
        server = self._server = PcmFile(self._temp("server"))
        stats = VoiceStats()
        covered: list[Span] = []
        for block in seat_blocks(self.seat, self.total, stats, [], covered):
            server.append(block)
        server.finish()
        self.pieces = _split(self.pieces, self._placement_breaks())
        self.damaged = damaged_ranges(covered, stats, self.total)
        # aligning needs only what the decoder did not make up (the audio after a loss
        # is the voice, a little low)
        self._concealed = damaged_ranges(covered, stats, self.total, recovery_s=0.0)
        for merge in self.runs:
            merge.pcm = PcmFile(self._temp(f"{merge.run.run:02d}"))
            try:
                decode_run(merge.run, merge.pcm)
                self._align(merge)
            except CaptureUnreadable as error:
                merge.reason = str(error)
            except Exception as error:  # a capture is a bonus: never worth the take
                log.exception("capture %s of %s not used", merge.source, self.root.name)
                merge.reason = f"the capture could not be used ({type(error).__name__})"
                merge.offsets.clear()
        self._assign()
        server.close()
        self._server = None

    def _placement_breaks(self) -> list[int]:
        """Timeline samples where the server placed the seat's audio anew (a segment
        or a run of its timing log begins: a reconnect, a resume, a timestamp jump):
        the capture is continuous there, the server's placement may not be."""
        return [
            run.base + run.granule_start
            for segment in self.seat.segments
            for run in segment.timing.runs
        ]

    def _align(self, merge: RunMerge) -> None:
        assert merge.pcm is not None and self._server is not None
        hint = -merge.run.rec_start * SAMPLE_RATE  # capture sample ≈ hint + timeline sample
        first, last = -hint, -hint + merge.pcm.samples
        if last <= 0 or first >= self.total:
            merge.reason = (
                f"the run lies outside the take (it claims {merge.run.rec_start:.1f} s to "
                f"{last / SAMPLE_RATE:.1f} s; the take lasts {self.total / SAMPLE_RATE:.1f} s)"
            )
            return
        self._tried = 0
        points = [
            point
            for t in self._candidates(max(0, int(first)), min(self.total, int(last)))
            if (point := self._match(merge, t, hint)) is not None
        ]
        if not points or (self._tried >= 4 and len(points) < MIN_MATCHED * self._tried):
            merge.reason = (
                f"its audio does not match the server's recording of this seat "
                f"({len(points)} of {self._tried} places matched"
                + (
                    "; the server heard nothing audible to align it with)"
                    if not self._tried
                    else ")"
                )
            )
            return
        kept = _fit(merge, points)
        merge.points, merge.rejected = len(kept), len(points) - len(kept)
        if abs(merge.drift) * 1e6 > MAX_DRIFT_PPM:
            merge.reason = f"its clock drifts implausibly ({merge.drift * 1e6:.0f} ppm)"
            merge.offsets.clear()
            return
        merge.gain = float(np.median([p.gain for p in kept]))

    def _candidates(self, low: int, high: int) -> Iterator[int]:
        """Where to measure: every POINT_STEP_S (or often enough for MIN_POINTS along
        a short run) of each piece within [low, high), at least once per piece."""
        step = max(_WINDOW, min(round(POINT_STEP_S * SAMPLE_RATE), (high - low) // MIN_POINTS))
        for start, end in self.pieces:
            start, end = max(start, low), min(end, high)
            if end - start < _WINDOW:
                continue
            yield from range(start + min(step // 2, (end - start - _WINDOW) // 2), end, step)

    def _match(self, merge: RunMerge, t: int, hint: float) -> Point | None:
        assert merge.pcm is not None and self._server is not None
        piece = next(i for i, (a, b) in enumerate(self.pieces) if a <= t < b)
        piece_end = self.pieces[piece][1]
        for _ in range(SLIDES + 1):
            if t + _WINDOW > piece_end:
                return None
            server = self._received(t)
            if server is not None:
                energy = float(np.dot(server, server))
                if energy >= _MIN_ENERGY:
                    self._tried += 1
                    return _correlate(merge, server, energy, t, piece, hint)
            t += round(SLIDE_S * SAMPLE_RATE)
        return None

    def _received(self, t: int) -> np.ndarray | None:
        """The server's window at `t` with its damaged samples zeroed (concealment is
        not the voice), or None when less than MIN_RECEIVED of it was received."""
        assert self._server is not None
        window = self._server.read(t, _WINDOW)
        end = t + _WINDOW
        index = bisect.bisect_left(self._concealed, (t, t))
        damaged = 0
        for a, b in self._concealed[max(0, index - 1) :]:
            if a >= end:
                break
            low, high = max(a, t) - t, min(b, end) - t
            if high > low:
                window[low:high] = 0.0
                damaged += high - low
        return window if damaged <= (1 - MIN_RECEIVED) * _WINDOW else None

    def _assign(self) -> None:
        for start, end in self.damaged:
            for number, (low, high) in enumerate(self.pieces):
                a, b = max(start, low), min(end, high)
                if b <= a:
                    continue
                remaining = [(a, b)]
                for merge in self.runs:
                    covers = merge.covers(number) if merge.used else None
                    if covers is None:
                        continue
                    left: list[Span] = []
                    for s, e in remaining:
                        fa, fb = max(s, covers[0]), min(e, covers[1])
                        if fb > fa:
                            self.fills.append(Fill(fa, fb, merge, number))
                            merge.filled += fb - fa
                            left += [x for x in ((s, fa), (fb, e)) if x[1] > x[0]]
                        else:
                            left.append((s, e))
                    remaining = left
        self.fills.sort(key=lambda f: f.start)
        self._ends = [f.end for f in self.fills]

    def blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The server stem's blocks (from timeline sample 0) with the fills applied."""
        at = 0
        for block in blocks:
            yield self.apply(block, at)
            at += len(block)

    def apply(self, block: np.ndarray, at: int) -> np.ndarray:
        end = at + len(block)
        index = bisect.bisect_right(self._ends, at - _XFADE)
        if index >= len(self.fills) or self.fills[index].start - _XFADE >= end:
            return block
        out = block.copy()
        for fill in self.fills[index:]:
            if fill.start - _XFADE >= end:
                break
            r0, r1 = max(at, fill.start - _XFADE), min(end, fill.end + _XFADE)
            if r1 <= r0:
                continue
            t = np.arange(r0, r1)
            weight = np.ones(len(t), np.float32)
            before, after = t < fill.start, t >= fill.end
            weight[before] = _rise(t[before] - (fill.start - _XFADE))
            weight[after] = _rise(fill.end + _XFADE - 1 - t[after])
            capture = fill.run.samples(r0, r1, fill.piece)
            part = out[r0 - at : r1 - at]
            out[r0 - at : r1 - at] = part + weight * (capture - part)
        return out

    def report(self) -> dict[str, Any]:
        """`metadata.json`'s `stems.<seat>.capture`: what each stretch of the stem came
        from, how much was filled, and each run's alignment."""
        ranges: list[dict[str, Any]] = []
        cursor = 0
        for fill in self.fills:
            if fill.start > cursor:
                ranges.append(_range(cursor, fill.start, "server"))
            ranges.append(_range(fill.start, fill.end, "browser", fill.run.source))
            cursor = fill.end
        if cursor < self.total:
            ranges.append(_range(cursor, self.total, "server"))
        damaged = sum(b - a for a, b in self.damaged)
        filled = sum(f.end - f.start for f in self.fills)
        return {
            "filled_s": round(filled / SAMPLE_RATE, 3),
            "damaged_s": round(damaged / SAMPLE_RATE, 3),
            "unfilled_s": round((damaged - filled) / SAMPLE_RATE, 3),
            "crossfade_ms": CROSSFADE_S * 1000,
            "runs": [merge.to_json(self.pieces) for merge in self.runs],
            "ranges": ranges,
        }

    def close(self) -> None:
        for merge in self.runs:
            if merge.pcm is not None:
                merge.pcm.close()
        if self._server is not None:
            self._server.close()


def seat_merges(root: Path, plan: Plan) -> dict[str, SeatMerge]:
    """A :class:`SeatMerge` for each seat of the plan with capture runs."""
    pieces = pieces_of(plan)
    merges = {}
    for seat in plan.seats:
        runs = capture_layout.read_runs(root, seat.seat)
        if runs:
            merges[seat.seat] = SeatMerge(root, seat, runs, pieces, plan.total)
    return merges


def _split(pieces: list[Span], cuts: Iterable[int]) -> list[Span]:
    """`pieces` cut further at `cuts` (pieces shorter than a window are not made)."""
    edges = sorted({a for a, _ in pieces} | {b for _, b in pieces})
    for cut in sorted(set(cuts)):
        index = bisect.bisect_left(edges, cut)
        near = [edges[i] for i in (index - 1, index) if 0 <= i < len(edges)]
        if 0 < cut < edges[-1] and all(abs(cut - e) >= _WINDOW for e in near):
            edges.insert(index, cut)
    return list(itertools.pairwise(edges))


def _rise(x: np.ndarray) -> np.ndarray:
    """Raised-cosine weights for x = 0 .. _XFADE - 1 (0 → just above 0, last → just below 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (x + 0.5) / _XFADE)).astype(np.float32)


def _range(start: int, end: int, source: str, file: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "start_s": round(start / SAMPLE_RATE, 3),
        "end_s": round(end / SAMPLE_RATE, 3),
        "source": source,
    }
    if file is not None:
        entry["file"] = file
    return entry


def _correlate(
    merge: RunMerge, server: np.ndarray, energy: float, t: int, piece: int, hint: float
) -> Point | None:
    """Where the server's window at `t` is in the capture, within SEARCH of the hint."""
    assert merge.pcm is not None
    guess = round(hint + t)
    low = max(0, guess - _SEARCH)
    high = min(merge.pcm.samples, guess + _WINDOW + _SEARCH)
    if high - low < _WINDOW + 2:
        return None
    capture = merge.pcm.read(low, high - low).astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(capture) + _WINDOW)))
    spectrum = np.fft.rfft(capture, size) * np.conj(np.fft.rfft(server.astype(np.float64), size))
    lags = len(capture) - _WINDOW + 1
    corr = np.fft.irfft(spectrum, size)[:lags]
    squares = np.concatenate(([0.0], np.cumsum(capture**2)))
    windows = np.maximum(squares[_WINDOW:] - squares[:-_WINDOW], 1e-12)
    match = corr / np.sqrt(energy * windows)
    best = int(np.argmax(match))
    if match[best] < MIN_MATCH:
        return None
    shift = 0.0
    if 0 < best < lags - 1:
        y0, y1, y2 = corr[best - 1], corr[best], corr[best + 1]
        curve = y0 - 2 * y1 + y2
        if curve < 0:
            shift = float(np.clip(0.5 * (y0 - y2) / curve, -0.5, 0.5))
    heard = capture[best : best + _WINDOW][server != 0.0]
    gain = float(np.sqrt(energy / max(float(np.dot(heard, heard)), 1e-12)))
    return Point(t, low + best + shift, piece, float(match[best]), gain)


def _fit(merge: RunMerge, points: list[Point]) -> list[Point]:
    """Fit drift and per-piece offsets to `points`, dropping the worst while any is
    off by more than OUTLIER_S; returns the points kept."""
    kept = list(points)
    while True:
        pieces = sorted({p.piece for p in kept})
        t = np.array([p.t for p in kept], np.float64)
        y = np.array([p.n for p in kept], np.float64) - t
        columns = [np.array([p.piece == k for p in kept], np.float64) for k in pieces]
        with_drift = t.max() - t.min() >= MIN_DRIFT_SPAN_S * SAMPLE_RATE
        if with_drift:
            columns.insert(0, t)
        solution = np.linalg.lstsq(np.stack(columns, axis=1), y, rcond=None)[0]
        drift = float(solution[0]) if with_drift else 0.0
        offsets = dict(zip(pieces, (float(a) for a in solution[int(with_drift) :]), strict=True))
        residuals = y - drift * t - np.array([offsets[p.piece] for p in kept])
        worst = int(np.argmax(np.abs(residuals)))
        if abs(residuals[worst]) > OUTLIER_S * SAMPLE_RATE and len(kept) > 1:
            del kept[worst]
            continue
        merge.drift, merge.offsets = drift, offsets
        merge.residual_s = float(np.sqrt(np.mean(residuals**2))) / SAMPLE_RATE
        return kept
