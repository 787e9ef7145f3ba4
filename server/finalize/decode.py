"""Decoding: a seat's Opus segments into one-second blocks on the recording clock.

A stem is first read page by page without decoding (:func:`scan_stem`: CRC-checked
pages, ~1/30 of the cost of decoding) to learn what is there; then FFmpeg decodes it
in C and hands back one-second frames, which :func:`seat_blocks` places on the clock
by the plan's runs, silence wherever there is no audio. FLAC stems written by pass 1
are read back the same way (:func:`flac_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from storyroom.finalize.contracts import Damage, DamageKind
from storyroom.finalize.damage import NO_AUDIO_REPORT_S, report_silences
from storyroom.finalize.plan import BLOCK, SeatPlan, Segment
from storyroom.recording.oggopus import Hole, NotOpus, OggOpusReader, opus_packet_samples
from storyroom.recording.timeline import SAMPLE_RATE


@dataclass(slots=True)
class VoiceStats:
    """What decoding found in one seat's voice, and the gain its stem gets."""

    peak: float = 0.0
    audio_samples: int = 0
    decoded_segments: int = 0
    gain: float = 1.0


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
    """(timeline sample, float32 samples) for one segment's decoded audio, in order.

    FFmpeg demuxes and decodes the whole stem in C (`amovie`), fills any hole the scan
    found with silence at its granule position (`aresample` in async mode) and hands
    back one-second frames: one trip through Python per second, not per 20 ms packet,
    which is what lets three seats decode in parallel threads. If FFmpeg gives up on
    the stem, the rest is decoded packet by packet."""
    scan = segment.scan
    if scan is None or scan.end is None or segment.opus is None:
        return
    stats.audio_samples += scan.samples
    stats.decoded_segments += 1
    reached = 0
    try:
        for granule, pcm in ffmpeg_frames(segment.opus, scan.end):
            yield from _placed(segment, granule, pcm)
            reached = granule + len(pcm)
    except av.FFmpegError:
        yield from _decode_packets(segment, reached, damage)


def ffmpeg_frames(path: Path, end: int) -> Iterator[tuple[int, np.ndarray]]:
    """(granule, float32 mono samples) from granule 0 up to `end`, gaps as silence."""
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


def _decode_packets(
    segment: Segment, reached: int, damage: list[Damage]
) -> Iterator[tuple[int, np.ndarray]]:
    """The slow, sure way: decode packet by packet from granule `reached` on, a packet
    the decoder refuses becoming silence."""
    assert segment.opus is not None and segment.scan is not None
    reader = OggOpusReader(segment.opus)
    decoder: Any = av.CodecContext.create("opus", "r")
    decoder.sample_rate = SAMPLE_RATE
    decoder.layout = "mono"
    decoder.extradata = segment.scan.head
    undecodable = 0
    for payload, end in reader.packets():
        samples = opus_packet_samples(payload)
        try:
            frames = decoder.decode(av.Packet(payload))
            pcm = np.concatenate([f.to_ndarray()[0] for f in frames]) if frames else None
        except av.FFmpegError:
            undecodable += 1
            pcm = None
        if end <= reached:
            continue
        if pcm is None or len(pcm) != samples:
            pcm = np.zeros(samples, np.float32) if pcm is None else pcm[:samples]
            pcm = np.pad(pcm, (0, samples - len(pcm)))
        start = end - samples
        if start < reached:
            pcm, start = pcm[reached - start :], reached
        yield from _placed(segment, start, pcm)
    if undecodable:
        damage.append(
            Damage(
                segment.seat,
                segment.opus_source,
                DamageKind.UNDECODABLE,
                f"{undecodable} packet(s) could not be decoded (silence instead)",
                segment.start_s,
                segment.end_s,
            )
        )


def seat_blocks(
    plan: SeatPlan, total: int, stats: VoiceStats, damage: list[Damage]
) -> Iterator[np.ndarray]:
    """The seat's voice on the recording timeline: `BLOCK`-sample float32 blocks (the
    last one shorter) covering [0, total), silence where there is no audio. What was
    lost is appended to `damage`."""
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
