"""Decoding: a seat's Opus segments into one-second blocks on the recording clock.

A stem is first read page by page without decoding (:func:`scan_stem`: CRC-checked
pages, ~1/30 of the cost of decoding) to learn what is there; then libopus decodes it
packet by packet (:func:`opus_frames`, through :mod:`~storyroom.finalize.libopus`),
and :func:`seat_blocks` places the audio on the clock by the plan's runs, silence
wherever there is no audio. This is the one decoder of stems: what it does with a lost
packet is what every output hears.

Packets lost in transit are gap fillers in the stem (`is_loss_filler`). A gap of up
to :data:`CONCEAL_LIMIT_S` is filled as a listener's browser would: the last lost
frame is rebuilt from the next packet's in-band FEC (LBRR) data when it carries some,
the rest by libopus' packet-loss concealment, so a lost packet never becomes a hole of
digital silence while the voice is there. A longer gap (an outage) is left silent, its
concealment fading out over :data:`OUTAGE_FADE_S` rather than cutting off. FFmpeg's
native decoder, used before, did neither: every lost packet was 20 ms of zeros.
FLAC stems written by pass 1 are read back with FFmpeg (:func:`flac_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import av
import numpy as np

from storyroom.finalize.contracts import Damage, DamageKind
from storyroom.finalize.damage import NO_AUDIO_REPORT_S, Loss, report_silences
from storyroom.finalize.libopus import PLC_UNIT, OpusDecoder, OpusError, frame_samples, has_lbrr
from storyroom.finalize.plan import BLOCK, SeatPlan, Segment
from storyroom.recording.oggopus import (
    Hole,
    NotOpus,
    OggOpusReader,
    is_loss_filler,
    opus_packet_samples,
)
from storyroom.recording.timeline import SAMPLE_RATE

CONCEAL_LIMIT_S: Final = 0.2
"""Gaps up to this long are concealed whole (10 packets of 20 ms); longer ones are
outages, silent after a fade."""
OUTAGE_FADE_S: Final = 0.06
_CONCEAL_LIMIT: Final = round(CONCEAL_LIMIT_S * SAMPLE_RATE)
_FADE: Final = round(OUTAGE_FADE_S * SAMPLE_RATE)
_FADE_OUT: Final = (0.5 * (1 + np.cos(np.pi * np.arange(_FADE) / _FADE))).astype(np.float32)
_CELT_ONLY: Final = 16 << 3  # TOC configurations 16..31 are CELT-only: never any LBRR


@dataclass(slots=True)
class VoiceStats:
    """What decoding found in one seat's voice, and the gain its stem gets."""

    peak: float = 0.0
    audio_samples: int = 0
    decoded_segments: int = 0
    gain: float = 1.0
    losses: list[Loss] = field(default_factory=list)
    longest_concealed_s: float = 0.0
    """The longest gap filled by FEC and concealment (outages not included)."""

    def count(self, what: str) -> int:
        """Packets over all losses: one of :data:`Loss.COUNTS`."""
        return sum(getattr(loss, what) for loss in self.losses)


@dataclass(slots=True)
class StemScan:
    """A stem read page by page without decoding: what is there and what is damaged."""

    head: bytes | None = None
    samples: int = 0
    """Audio samples in the readable packets."""
    end: int | None = None
    """Granule end of the last readable packet (None: no audio)."""
    problem: str | None = None
    """Why the file is not a readable Ogg Opus stream at all."""
    holes: list[Hole] = field(default_factory=list)
    empty_file: bool = False
    torn_tail: bool = False


def scan_stem(segment: Segment) -> StemScan:
    """Read `segment`'s stem without decoding (nothing to read without a stem or runs)."""
    scan = StemScan()
    if segment.opus is None or not segment.timing.runs:
        return scan
    reader = OggOpusReader(segment.opus)
    try:
        for payload, end in reader.packets():
            scan.samples += opus_packet_samples(payload)
            scan.end = end
    except NotOpus as error:
        return StemScan(problem=str(error))
    scan.head = reader.head
    scan.holes = reader.holes
    scan.empty_file = reader.pages.bytes == 0
    scan.torn_tail = reader.pages.torn_tail
    return scan


def decode_segment(
    segment: Segment, damage: list[Damage], stats: VoiceStats
) -> Iterator[tuple[int, np.ndarray]]:
    """(timeline sample, float32 samples) for one segment's decoded audio, in order."""
    scan = segment.scan
    if scan is None or scan.end is None or segment.opus is None:
        return
    stats.audio_samples += scan.samples
    stats.decoded_segments += 1
    decoded = OpusFrames(segment.opus, scan.end)
    for granule, pcm in decoded:
        yield from _placed(segment, granule, pcm)
    for gap in decoded.gaps:
        if gap.packets:
            stats.losses.append(
                Loss(
                    segment.timing_source,
                    segment.seconds(gap.start),
                    segment.seconds(gap.end),
                    gap.packets,
                    gap.fec,
                    gap.plc,
                    gap.silent,
                )
            )
        if not gap.silent:
            stats.longest_concealed_s = max(
                stats.longest_concealed_s, (gap.end - gap.start) / SAMPLE_RATE
            )
    if decoded.undecodable:
        damage.append(
            Damage(
                segment.seat,
                segment.opus_source,
                DamageKind.UNDECODABLE,
                f"{decoded.undecodable} packet(s) could not be decoded (concealed instead)",
                segment.start_s,
                segment.end_s,
            )
        )


@dataclass(slots=True)
class Gap:
    """Granules [start, end) of a stem without packets, and how they were filled.
    `packets` counts the lost packets the stem's fillers stand for (0 for pages that
    could not be read: that is other damage)."""

    start: int
    end: int
    packets: int = 0
    fec: int = 0
    plc: int = 0
    silent: int = 0


class OpusFrames:
    """Iterating gives (granule, float32 mono samples) of a stem, about a second at a
    time, from its first packet up to granule `end`, every gap filled (see the module
    docstring); afterwards :attr:`gaps` and :attr:`undecodable` say what was filled."""

    def __init__(self, path: Path, end: int) -> None:
        self.path = path
        self.end = end
        self.gaps: list[Gap] = []
        self.undecodable = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        with OpusDecoder() as decoder:
            pieces: list[np.ndarray] = []
            held = 0  # samples in pieces
            at: int | None = None  # granule of pieces[0]
            expected = 0  # where the next packet should start
            lost = 0  # samples of gap fillers since the last packet
            previous = 0  # samples of the last packet decoded
            celt = False  # whether it was CELT-only (then libopus cannot use FEC)
            for payload, packet_end in OggOpusReader(self.path).packets():
                samples = opus_packet_samples(payload)
                start = packet_end - samples
                if at is None:
                    at = expected = start
                if start < expected:
                    continue  # overlaps what is decoded (the writer never does this)
                if is_loss_filler(payload):
                    lost += samples
                    continue
                if start > expected:
                    gap = self._filled(decoder, expected, start, lost, previous, celt, payload)
                    pieces += gap
                    held += start - expected
                try:
                    pcm = decoder.decode(payload)
                except OpusError:
                    self.undecodable += 1
                    pcm = decoder.conceal(samples - samples % PLC_UNIT)
                pieces.append(_fit(pcm, samples))
                held += samples
                expected, lost, previous = packet_end, 0, samples
                celt = payload[0] >= _CELT_ONLY
                if held >= BLOCK:
                    yield from self._out(at, pieces)
                    at, pieces, held = at + held, [], 0
                if expected >= self.end:
                    break
            if at is not None and expected < self.end and lost:
                pieces += self._filled(decoder, expected, expected + lost, lost, previous, celt)
                held += lost
            if at is not None and pieces:
                yield from self._out(at, pieces)

    def _out(self, at: int, pieces: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        if at < self.end:
            yield at, np.concatenate(pieces)[: self.end - at]

    def _filled(
        self,
        decoder: OpusDecoder,
        start: int,
        end: int,
        lost: int,
        previous: int,
        celt: bool,
        following: bytes | None = None,
    ) -> list[np.ndarray]:
        """Audio for granules [start, end) where no packet was received; `lost` of them
        stood for lost packets, `following` is the packet after the gap (None at the
        end of the stem)."""
        length = end - start
        usable = length - length % PLC_UNIT
        gap = Gap(start, end, packets=max(1, round(lost / previous)) if lost and previous else 0)
        self.gaps.append(gap)
        if length <= _CONCEAL_LIMIT and following is not None:
            frame = frame_samples(following)
            if not celt and frame and usable >= frame and has_lbrr(following):
                pcm = decoder.recover(following, usable)
                gap.fec = min(1, gap.packets)
            else:
                pcm = decoder.conceal(usable)
            gap.plc = gap.packets - gap.fec
            return [pcm, np.zeros(length - len(pcm), np.float32)]
        # An outage: the voice fades out, then silence; what follows starts afresh.
        fade = min(_FADE, usable)
        pcm = decoder.conceal(fade) * _FADE_OUT[:fade]
        decoder.reset()
        gap.silent = gap.packets
        return [pcm, np.zeros(length - len(pcm), np.float32)]


def _fit(pcm: np.ndarray, samples: int) -> np.ndarray:
    """Exactly `samples` samples: a packet's place is fixed by its granule."""
    if len(pcm) == samples:
        return pcm
    return np.pad(pcm[:samples], (0, max(0, samples - len(pcm))))


def _placed(segment: Segment, granule: int, pcm: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Samples from `granule` on, cut where runs begin, each piece at its run's place."""
    runs = segment.timing.runs
    while len(pcm):
        index = segment.timing.run_at(granule)
        following = runs[index + 1].granule_start if index + 1 < len(runs) else None
        take = len(pcm) if following is None else max(1, min(len(pcm), following - granule))
        yield runs[index].base + granule, pcm[:take]
        granule += take
        pcm = pcm[take:]


def seat_blocks(
    plan: SeatPlan,
    total: int,
    stats: VoiceStats,
    damage: list[Damage],
    covered: list[tuple[int, int]] | None = None,
) -> Iterator[np.ndarray]:
    """The seat's voice on the recording timeline: `BLOCK`-sample float32 blocks (the
    last one shorter) covering [0, total), silence where there is no audio. What was
    lost is appended to `damage`; the timeline spans that decoded stems placed audio
    in (received, recovered or concealed) to `covered`, if given."""
    block = np.zeros(min(BLOCK, total), np.float32)
    block_at = 0
    cursor = 0  # everything before this timeline sample is decided
    silences: list[tuple[int, int, str]] = []
    for number, segment in enumerate(plan.segments):
        first = True
        for at, pcm in decode_segment(segment, damage, stats):
            if at < cursor:  # runs or segments overlapping by a few ms: keep the earlier
                pcm = pcm[cursor - at :]
                at = cursor
            if at >= total:
                continue
            pcm = pcm[: total - at]
            if not len(pcm):
                continue
            if at - cursor > NO_AUDIO_REPORT_S * SAMPLE_RATE:
                if cursor == 0:
                    why = "no audio before the seat's first packet"
                elif first and number:
                    why = "seat disconnected (no audio until it reconnected)"
                else:
                    why = "no audio from the sender (its timestamps jumped)"
                silences.append((cursor, at, why))
            first = False
            if covered is not None:
                covered.append((at, at + len(pcm)))
            while len(pcm):
                if at >= block_at + len(block):
                    yield block
                    block_at += len(block)
                    block = np.zeros(min(BLOCK, total - block_at), np.float32)
                    continue
                offset = at - block_at
                take = min(len(pcm), len(block) - offset)
                block[offset : offset + take] = pcm[:take]
                at += take
                pcm = pcm[take:]
            cursor = at
    while block_at < total:
        yield block
        block_at += len(block)
        block = np.zeros(min(BLOCK, total - block_at), np.float32)
    if total - cursor > NO_AUDIO_REPORT_S * SAMPLE_RATE and cursor > 0:
        silences.append((cursor, total, "no audio after the seat's last packet"))
    report_silences(plan.seat, silences, damage)


def ffmpeg_frames(path: Path, end: int) -> Iterator[tuple[int, np.ndarray]]:
    """(sample, float32 mono samples) of a FLAC file from 0 up to `end`, one second at
    a time, decoded and converted by FFmpeg in C (any gap in its timestamps silence)."""
    graph = av.filter.Graph()
    source = graph.add("amovie", filename=str(path))
    fill = graph.add("aresample", **{"async": "1", "min_hard_comp": "0.0001", "first_pts": "0"})
    frames = graph.add("asetnsamples", n=str(BLOCK), p="0")
    planar = graph.add("aformat", sample_fmts="fltp", channel_layouts="mono")
    sink = graph.add("abuffersink")
    source.link_to(fill)
    fill.link_to(frames)
    frames.link_to(planar)
    planar.link_to(sink)
    graph.configure()
    granule = 0
    while granule < end:
        try:
            frame: Any = sink.pull()
        except av.EOFError:
            return
        pcm = frame.to_ndarray()[0][: end - granule]
        yield granule, pcm
        granule += len(pcm)


def flac_blocks(path: Path, total: int, scale: float = 1.0) -> Iterator[np.ndarray]:
    """A FLAC stem read back as `BLOCK`-sample float32 blocks covering [0, total):
    FFmpeg decodes and converts in C and hands back one-second frames (one trip through
    Python per second, not per FLAC frame)."""
    produced = 0
    for _, pcm in ffmpeg_frames(path, total):
        yield pcm * np.float32(scale) if scale != 1.0 else pcm
        produced += len(pcm)
    while produced < total:
        yield np.zeros(min(BLOCK, total - produced), np.float32)
        produced += BLOCK
