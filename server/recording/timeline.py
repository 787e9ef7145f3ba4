"""Placing recorded packets on the room's recording clock, from the timing logs.

A stem segment's samples are continuous within a *run*: a stretch with no pause,
resume or timestamp discontinuity. Within a run a sample's place is
`offset + granule / 48000`; `_scan` explains how the offset comes from the sender's
RTP clock, fixed by the packet that arrived soonest after it was spoken (network
jitter only ever delays arrival, never hastens it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storyroom.recording import layout
from storyroom.recording.layout import JsonLines, SegmentEvent

SAMPLE_RATE = 48_000
RUN_BREAKS = (SegmentEvent.RESUME, SegmentEvent.DISCONTINUITY, SegmentEvent.PAUSE)


@dataclass(frozen=True, slots=True)
class PacketTiming:
    seq: int
    ts: int
    arrival: float
    rec: float
    granule_end: int
    samples: int

    @property
    def granule_start(self) -> int:
        return self.granule_end - self.samples


@dataclass(slots=True)
class Run:
    """Samples [granule_start, granule_end) of a segment, at `offset + g / 48000` seconds."""

    granule_start: int
    granule_end: int
    offset: float

    def rec_time(self, granule: int) -> float:
        return self.offset + granule / SAMPLE_RATE

    @property
    def base(self) -> int:
        """The offset in whole samples: granule `g` of the run is recording-clock sample
        `base + g` (what placing audio on the 48 kHz timeline uses)."""
        return round(self.offset * SAMPLE_RATE)


@dataclass(slots=True)
class SegmentTiming:
    seat: str
    index: int
    packets: list[PacketTiming] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    damaged_lines: int = 0

    def rec_time(self, granule: int) -> float | None:
        """Recording-clock time of sample `granule` of this segment, if it was recorded."""
        for run in self.runs:
            if run.granule_start <= granule < run.granule_end:
                return run.rec_time(granule)
        return None

    def run_at(self, granule: int) -> int:
        """Index of the run that places `granule`: the last one starting at or before it
        (the first run for a granule before them all). There must be runs."""
        runs = self.runs
        index = 0
        while index + 1 < len(runs) and granule >= runs[index + 1].granule_start:
            index += 1
        return index

    def sample(self, granule: int) -> int:
        """The recording-clock sample (48 kHz) at which `granule` plays."""
        return self.runs[self.run_at(granule)].base + granule

    @property
    def granule_end(self) -> int:
        """The last granule the log vouches for (0 without packets)."""
        return self.runs[-1].granule_end if self.runs else 0


def read_segment(timing_path: Path) -> SegmentTiming:
    """Read a `<seat>-<NN>.timing.jsonl` with its packet lines; a torn last line (crash)
    is skipped and counted."""
    return _scan(timing_path, keep_packets=True)


def scan_segment(timing_path: Path) -> SegmentTiming:
    """Like :func:`read_segment`, in constant memory: the runs, events and damaged-line
    count of a segment without keeping its packet lines (`packets` stays empty).

    A 40-minute segment has ~120 000 packet lines; the finalizer only needs the runs.
    """
    return _scan(timing_path, keep_packets=False)


@dataclass(slots=True)
class _RunScan:
    granule_start: int
    granule_end: int
    ts_base: int  # rtp_ts - granule within this run
    clock: float  # rec_time - arrival (steady clock): constant while the room is not paused
    epoch: int


def _scan(timing_path: Path, *, keep_packets: bool) -> SegmentTiming:
    """One pass over a timing log.

    The sender's RTP clock is exact and continuous for the whole segment (it keeps
    running through pauses), so one estimate serves every run: `wall = W + ts / 48000`
    with `W = min(arrival - ts_end / 48000)` over all the segment's packets, the one
    that waited least. The room clock is `rec = wall + clock_r`, exact per run. A run's
    offset is then `W + ts_base_r / 48000 + clock_r`. Timestamps that jump backwards
    (a `discontinuity`) start a new epoch with its own W.
    """
    named = layout.parse_segment_file(timing_path.name)
    segment = SegmentTiming(
        seat=named.seat if named else timing_path.name.split(".")[0],
        index=named.index if named else 0,
    )
    runs: list[_RunScan] = []
    current: _RunScan | None = None
    epochs: list[float] = [float("inf")]
    lines = JsonLines(timing_path)
    for entry in lines:
        if isinstance(entry, list) and len(entry) == 6:
            try:
                packet = PacketTiming(
                    int(entry[0]),
                    int(entry[1]),
                    float(entry[2]),
                    float(entry[3]),
                    int(entry[4]),
                    int(entry[5]),
                )
            except (TypeError, ValueError):
                segment.damaged_lines += 1
                continue
            if keep_packets:
                segment.packets.append(packet)
            ts_base = packet.ts - packet.granule_start
            if current is not None and ts_base < current.ts_base:
                epochs.append(float("inf"))  # timestamps went backwards
                current = None
            epochs[-1] = min(
                epochs[-1], packet.arrival - (packet.ts + packet.samples) / SAMPLE_RATE
            )
            if current is None:
                current = _RunScan(
                    packet.granule_start,
                    packet.granule_end,
                    ts_base,
                    packet.rec - packet.arrival,
                    len(epochs) - 1,
                )
                runs.append(current)
            else:
                current.granule_end = packet.granule_end
        elif isinstance(entry, dict):
            segment.events.append(entry)
            if entry.get("type") in RUN_BREAKS:
                current = None
        else:
            segment.damaged_lines += 1
    segment.damaged_lines += lines.damaged
    segment.runs = [
        Run(r.granule_start, r.granule_end, epochs[r.epoch] + r.ts_base / SAMPLE_RATE + r.clock)
        for r in runs
    ]
    # Runs tile the segment: a run ends where the next one begins.
    for run, following in zip(segment.runs, segment.runs[1:], strict=False):
        run.granule_end = following.granule_start
    return segment


def read_recording(recording_dir: Path) -> list[SegmentTiming]:
    """Every segment of a recording, by seat then segment number."""
    stems = recording_dir / layout.STEMS
    return sorted(
        (read_segment(p) for p in stems.glob(f"*{layout.TIMING_SUFFIX}")),
        key=lambda s: (s.seat, s.index),
    )
