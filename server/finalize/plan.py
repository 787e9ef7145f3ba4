"""The plan: which segments each seat has, and where on the recording clock their
samples go.

Built from the recording's folder (:mod:`storyroom.recording.layout`): its stems,
`recording.jsonl` (segment open times, pauses) and each segment's timing log, whose
runs :mod:`storyroom.recording.timeline` places on the clock. A segment whose timing
log is missing or has no packet lines is placed by its open time (approximately: a
pause inside it would not be cut), and the damage list says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from storyroom.finalize.contracts import Damage, DamageKind, FinalizeInput
from storyroom.recording import layout
from storyroom.recording.layout import JsonLines, RecordingEvent, SegmentEvent
from storyroom.recording.ogg import last_granule
from storyroom.recording.timeline import SAMPLE_RATE, Run, SegmentTiming, scan_segment
from storyroom.seats import SEATS

if TYPE_CHECKING:
    from storyroom.finalize.decode import StemScan

BLOCK: Final = SAMPLE_RATE  # one second: the unit of every pass
PAN: Final = {"a": -0.3, "b": 0.3, "facilitator": 0.0}  # -1 left … +1 right
FIRST_PACKET_S: Final = 0.020
"""A segment opens when its first (20 ms) packet arrives."""


@dataclass(slots=True)
class Segment:
    """One seat's audio over one connection: its files and its place on the clock."""

    seat: str
    index: int
    opus: Path | None
    timing_log: Path | None
    open_rec: float | None
    """The recording clock when the segment opened (from `recording.jsonl`)."""
    timing: SegmentTiming
    """Its runs on the recording clock, once placed (:func:`place_seat`)."""
    scan: StemScan | None = None
    """What the stem holds, read without decoding (pass 1)."""

    @property
    def opus_source(self) -> str:
        return layout.segment_opus(self.seat, self.index)

    @property
    def timing_source(self) -> str:
        return layout.segment_timing(self.seat, self.index)

    @property
    def log_end(self) -> int:
        """Last granule the timing log vouches for (0 without packet lines)."""
        return self.timing.granule_end

    def seconds(self, granule: int) -> float:
        return self.timing.sample(granule) / SAMPLE_RATE

    @property
    def start_s(self) -> float:
        runs = self.timing.runs
        return self.seconds(runs[0].granule_start) if runs else 0.0

    @property
    def end_s(self) -> float:
        return self.seconds(self.log_end) if self.timing.runs else 0.0


@dataclass(slots=True)
class SeatPlan:
    seat: str
    name: str
    """The participant's first name ("" if unknown)."""
    segments: list[Segment]
    gains: tuple[float, float]
    """Left and right gains of the voice in the stereo mix."""
    damage: list[Damage] = field(default_factory=list)
    placed: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    rec_time: float
    paused_s: float | None
    """How long it lasted in wall time; None if it never resumed."""


@dataclass(slots=True)
class Plan:
    seats: list[SeatPlan]
    total: int
    """Samples on the recording clock."""
    pauses: list[Pause]

    @property
    def blocks(self) -> int:
        return -(-self.total // BLOCK)


def pan_gains(seat: str) -> tuple[float, float]:
    """Constant-power pan: a centred voice is -3 dB in each channel."""
    angle = (PAN.get(seat, 0.0) + 1) * math.pi / 4
    return math.cos(angle), math.sin(angle)


def make_plan(recording_dir: Path, job: FinalizeInput) -> Plan:
    """Every seat (known to the session or with files) and its segments, in order; the
    length comes from the room clock, or, without it, from placing every segment now."""
    events = [e for e in JsonLines(recording_dir / layout.RECORDING_LOG) if isinstance(e, dict)]
    opened = {
        (e.get("seat"), e.get("segment")): float(e["rec"])
        for e in events
        if e.get("type") == RecordingEvent.SEGMENT_OPEN and isinstance(e.get("rec"), int | float)
    }
    files: dict[tuple[str, int], dict[str, Path]] = {}
    stems = recording_dir / layout.STEMS
    if stems.is_dir():
        for path in stems.iterdir():
            named = layout.parse_segment_file(path.name)
            if named is not None and path.is_file():
                kind = "timing" if named.timing else "opus"
                files.setdefault((named.seat, named.index), {})[kind] = path
    present = {seat for seat, _ in files} | set(job.seats)
    seat_names = [s for s in SEATS if s in present] + sorted(present - set(SEATS))
    plans: list[SeatPlan] = []
    for seat in seat_names:
        plan = SeatPlan(seat, job.seats.get(seat, ""), [], pan_gains(seat))
        for (file_seat, index), paths in sorted(files.items()):
            if file_seat == seat:
                plan.segments.append(
                    Segment(
                        seat,
                        index,
                        paths.get("opus"),
                        paths.get("timing"),
                        opened.get((seat, index)),
                        SegmentTiming(seat, index),
                    )
                )
        if not plan.segments:
            plan.damage.append(
                Damage(
                    seat,
                    f"{layout.STEMS}/",
                    DamageKind.NO_AUDIO,
                    "no audio was recorded from this seat",
                )
            )
        plans.append(plan)
    if job.duration_s is not None and job.duration_s > 0:
        end = round(job.duration_s * SAMPLE_RATE)
    else:  # the stems decide: place them all now (otherwise each seat's thread does)
        end = 0
        for plan in plans:
            place_seat(plan)
            for segment in plan.segments:
                if segment.timing.runs:
                    end = max(end, round(segment.end_s * SAMPLE_RATE))
    return Plan(plans, end, _pauses(events))


def _pauses(events: list[dict[str, Any]]) -> list[Pause]:
    """Pauses from `recording.jsonl`: where on the clock, and how long in wall time."""
    pauses: list[Pause] = []
    paused: dict[str, Any] | None = None
    for event in events:
        if event.get("type") == RecordingEvent.PAUSE and isinstance(event.get("rec"), int | float):
            paused = event
        elif event.get("type") == RecordingEvent.RESUME and paused is not None:
            wall = event.get("at", 0) - paused.get("at", 0)
            pauses.append(Pause(float(paused["rec"]), max(0.0, float(wall))))
            paused = None
    if paused is not None:
        pauses.append(Pause(float(paused["rec"]), None))
    return pauses


def place_seat(plan: SeatPlan) -> None:
    """Read the seat's timing logs (once): where each segment's samples go."""
    if not plan.placed:
        for segment in plan.segments:
            _place(segment, plan.damage)
        plan.placed = True


def _place(segment: Segment, damage: list[Damage]) -> None:
    """Place `segment` by its timing log, or by its open time if the log is missing or
    has no packet lines (then pauses inside the segment are not known)."""
    open_rec = segment.open_rec
    if segment.timing_log is not None:
        segment.timing = scan_segment(segment.timing_log)
        for event in segment.timing.events:
            if event.get("type") == SegmentEvent.OPEN and open_rec is None:
                if isinstance(event.get("rec"), int | float):
                    open_rec = float(event["rec"])
        if segment.timing.damaged_lines:
            at = segment.end_s if segment.timing.runs else None
            damage.append(
                Damage(
                    segment.seat,
                    segment.timing_source,
                    DamageKind.TIMING_LINES,
                    f"{segment.timing.damaged_lines} unreadable line(s) in the timing log skipped",
                    at,
                    at,
                )
            )
    if segment.timing.runs or segment.opus is None:
        return
    if open_rec is None:
        damage.append(
            Damage(
                segment.seat,
                segment.opus_source,
                DamageKind.UNPLACED,
                "no timing log and no open time: this segment's audio could not be placed",
            )
        )
        return
    end = last_granule(segment.opus)
    segment.timing.runs = [Run(0, end, open_rec - FIRST_PACKET_S)]
    damage.append(
        Damage(
            segment.seat,
            segment.timing_source,
            DamageKind.MISSING_TIMING,
            "timing log missing or empty: placed by the segment's open time "
            "(approximate; a pause inside it would not be cut)",
            open_rec,
            None,
        )
    )
