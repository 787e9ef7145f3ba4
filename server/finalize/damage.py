"""Damage records: how each loss in a seat's input is named, timed and explained.

Damage (a stem cut off by a crash, a corrupt page, an empty or missing file, a torn
timing line, lost packets, stretches without audio) never stops finalization: what
decodes is kept, the rest is silence, and `metadata.json` lists each loss with its
seat, time range and reason (:class:`~storyroom.finalize.contracts.Damage`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from storyroom.finalize.contracts import Damage, DamageKind
from storyroom.finalize.plan import SeatPlan, Segment
from storyroom.recording import layout
from storyroom.recording.oggopus import Hole
from storyroom.recording.timeline import SAMPLE_RATE

if TYPE_CHECKING:
    from storyroom.finalize.decode import StemScan, VoiceStats

NO_AUDIO_REPORT_S: Final = 1.0  # silences longer than this in a seat are listed
PACKET_LOSS_MERGE_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Loss:
    """Packets lost in transit in one place of a voice, and how each was filled."""

    source: str
    """The segment's timing log, which says where the packets were lost."""
    start_s: float
    end_s: float
    """Where the lost audio lies on the recording clock."""
    packets: int
    fec: int
    """Rebuilt from the next packet's in-band FEC data."""
    plc: int
    """Concealed by libopus' packet-loss concealment."""
    silent: int
    """Left silent: the gap was an outage (see :mod:`~storyroom.finalize.decode`)."""

    COUNTS: ClassVar[tuple[str, ...]] = ("packets", "fec", "plc", "silent")


def stem_damage(segment: Segment, scan: StemScan) -> list[Damage]:
    """What reading `segment`'s stem without decoding found missing, damaged or cut off."""
    seat, source = segment.seat, segment.opus_source
    if segment.opus is None:
        if not segment.timing.runs:
            return []
        reason = "the stem file is missing (its timing log is there)"
        return [
            Damage(seat, source, DamageKind.MISSING_STEM, reason, segment.start_s, segment.end_s)
        ]
    if not segment.timing.runs:
        return []
    if scan.problem is not None:
        return [
            Damage(
                seat, source, DamageKind.UNREADABLE, scan.problem, segment.start_s, segment.end_s
            )
        ]
    found = []
    for hole in scan.holes:
        hole_end = hole.end if hole.end is not None else max(segment.log_end, hole.start)
        kind, reason = _hole(hole)
        found.append(
            Damage(
                seat,
                source,
                kind,
                reason,
                segment.seconds(hole.start),
                segment.seconds(hole_end),
            )
        )
    if scan.end is None:
        reason = (
            "the stem file is empty"
            if scan.empty_file
            else "the stem has no audio pages (headers only)"
        )
        found.append(
            Damage(seat, source, DamageKind.EMPTY_STEM, reason, segment.start_s, segment.end_s)
        )
    elif scan.end < segment.log_end and not any(h.end is None for h in scan.holes):
        cut = "mid-page" if scan.torn_tail else "at a page boundary"
        found.append(
            Damage(
                seat,
                source,
                DamageKind.TRUNCATED,
                f"the stem ends {(segment.log_end - scan.end) / SAMPLE_RATE:.2f} s before "
                f"its timing log (cut off {cut}, e.g. by a crash)",
                segment.seconds(scan.end),
                segment.end_s,
            )
        )
    return found


def _hole(hole: Hole) -> tuple[DamageKind, str]:
    if not hole.corrupt:
        return DamageKind.MISSING_PAGES, "page(s) missing"
    if hole.end is None:
        return DamageKind.CORRUPT, "corrupt page (checksum mismatch) at the end"
    return DamageKind.CORRUPT, "corrupt page (checksum mismatch) skipped"


def packet_losses(plan: SeatPlan, voice: VoiceStats) -> None:
    """Packets lost in transit, merged into ranges, each saying how its packets were
    filled (as the decoder found them: FEC, concealment or an outage's silence)."""
    merged: list[list[Loss]] = []
    for loss in sorted(voice.losses, key=lambda loss: loss.start_s):
        last = merged[-1][-1] if merged else None
        if last and last.source == loss.source and loss.start_s - last.end_s <= PACKET_LOSS_MERGE_S:
            merged[-1].append(loss)
        else:
            merged.append([loss])
    for losses in merged:
        plan.damage.append(
            Damage(
                plan.seat,
                losses[0].source,
                DamageKind.PACKET_LOSS,
                loss_reason(losses),
                max(0.0, losses[0].start_s),
                losses[-1].end_s,
            )
        )


def loss_reason(losses: list[Loss]) -> str:
    """`12 packet(s) lost in transit: 3 recovered from in-band FEC, 9 concealed (PLC)`."""
    count = {what: sum(getattr(loss, what) for loss in losses) for what in Loss.COUNTS}
    ways = [
        f"{count['fec']} recovered from in-band FEC" if count["fec"] else "",
        f"{count['plc']} concealed (PLC)" if count["plc"] else "",
        (
            f"{count['silent']} in an outage left silent (the concealment fades out)"
            if count["silent"]
            else ""
        ),
    ]
    return f"{count['packets']} packet(s) lost in transit: " + ", ".join(w for w in ways if w)


def report_silences(seat: str, silences: list[tuple[int, int, str]], damage: list[Damage]) -> None:
    """Stretches without audio (timeline samples, why), minus what other damage
    already explains."""
    explained = [
        (d.start_s, d.end_s)
        for d in damage
        if d.start_s is not None and d.end_s is not None and d.kind is not DamageKind.PACKET_LOSS
    ]
    for start, end, reason in silences:
        pieces = [(start / SAMPLE_RATE, end / SAMPLE_RATE)]
        for low, high in explained:
            assert low is not None and high is not None
            pieces = [
                part
                for a, b in pieces
                for part in ((a, min(b, low)), (max(a, high), b))
                if part[1] - part[0] > 0
            ]
        for a, b in pieces:
            if b - a > NO_AUDIO_REPORT_S:
                damage.append(Damage(seat, f"{layout.STEMS}/", DamageKind.NO_AUDIO, reason, a, b))


def in_order(plans: Iterable[SeatPlan]) -> list[Damage]:
    """Every seat's damage, by seat and then by start as listed (to the millisecond)."""
    return sorted(
        (d for plan in plans for d in plan.damage),
        key=lambda d: (d.seat, round(d.start_s, 3) if d.start_s is not None else -1),
    )
