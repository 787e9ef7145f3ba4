"""Placing recorded packets on the room's recording clock, from the timing logs.

A stem segment's samples are continuous within a *run*: a stretch with no pause,
resume or timestamp discontinuity. Within a run the sender's RTP clock is exact, so a
sample's place is `offset + granule / 48000`, where the offset is fixed by the packet
that arrived soonest after it was spoken (the smallest `rec_time - granule_end / 48000`
of the run): network jitter only ever delays arrival, never hastens it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 48_000
RUN_BREAKS = ("resume", "discontinuity", "pause")


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


def read_segment(timing_path: Path) -> SegmentTiming:
    """Read a `<seat>-<NN>.timing.jsonl`; a torn last line (crash) is skipped and counted."""
    name = timing_path.name.split(".")[0]
    seat, _, index = name.rpartition("-")
    segment = SegmentTiming(seat=seat, index=int(index) if index.isdigit() else 0)
    current: list[PacketTiming] = []
    runs: list[list[PacketTiming]] = [current]
    with open(timing_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                segment.damaged_lines += 1
                continue
            if isinstance(entry, list) and len(entry) == 6:
                packet = PacketTiming(*entry)
                segment.packets.append(packet)
                current.append(packet)
            elif isinstance(entry, dict):
                segment.events.append(entry)
                if entry.get("type") in RUN_BREAKS and current:
                    current = []
                    runs.append(current)
            else:
                segment.damaged_lines += 1
    for packets in runs:
        if not packets:
            continue
        offset = min(p.rec - p.granule_end / SAMPLE_RATE for p in packets)
        segment.runs.append(Run(packets[0].granule_start, packets[-1].granule_end, offset))
    # Runs tile the segment: a run ends where the next one begins.
    for run, following in zip(segment.runs, segment.runs[1:], strict=False):
        run.granule_end = following.granule_start
    return segment


def read_recording(recording_dir: Path) -> list[SegmentTiming]:
    """Every segment of a recording, by seat then segment number."""
    stems = recording_dir / "stems"
    return sorted(
        (read_segment(p) for p in stems.glob("*.timing.jsonl")),
        key=lambda s: (s.seat, s.index),
    )
