"""Finalization: from a recording's raw stems and timing logs to the archival files.

Runs in a worker process (the caller's process pool): plain data in
(:class:`FinalizeInput`), plain data out; no asyncio, database or sockets.

Two passes over the audio, both streamed in one-second blocks, never holding a stem
or the mix in memory:

1. **Analyse** — each seat's Opus segments are decoded (one thread per seat), placed
   on the recording clock from the timing logs (:mod:`storyroom.recording.timeline`) and
   written as the seat's 24-bit FLAC stem; the blocks are mixed to measure each
   voice's and the master's peak and the mix's integrated loudness (FFmpeg's
   ``ebur128``), keeping a fixed-size sample of the programme.
2. **Write** — the FLAC stems are read back (a voice that went past full scale is
   decoded again instead, and its stem rewritten with a constant gain) and mixed into
   the Broadcast WAV master (a constant gain only if it would clip) and the access
   copy: a constant gain to -16 LUFS (corrected by what the encoder is measured to take
   away on the sample), a look-ahead true-peak limiter, MP3 with chapters, encoded on
   its own thread (LAME called a second at a time without the GIL, :class:`_Lame`)
   while another decodes what it wrote and measures it.

The MP3 encoder is the slowest stage by far and cannot start before pass 1 has
measured the whole programme. Everything else runs beside it on the other core, and
each stem is decoded once: the machine is often shared (other rooms, other
finalizations), so what counts is the total CPU, not only the wall time.

Then chapters, the waveform, ``metadata.json`` and the sha256 manifest (every file in
the recording's folder except hidden bookkeeping files such as the caller's progress
file). Every output is written under a ``.part`` name and renamed only when the whole
set is complete.

Damage (a stem cut off by a crash, a corrupt page, an empty or missing file, a torn
timing line) never stops finalization: what decodes is kept, the rest is silence, and
``metadata.json`` lists each loss with its seat, time range and reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import fractions
import hashlib
import json
import math
import os
import queue
import random
import re
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import av
import numpy as np
from av.packet import PacketSideData, packet_sidedata_type_from_literal

from storyroom.finalize.bwf import Bext, BroadcastWavWriter, CuePoint
from storyroom.finalize.contracts import (
    AccessLoudness,
    Chapter,
    Damage,
    DamageKind,
    FileKind,
    Finalized,
    FinalizedFile,
    FinalizeInput,
    LoudnessReport,
    MasterLoudness,
)
from storyroom.finalize.waveform import WaveformPeaks, waveform_svg
from storyroom.recording.ogg import last_granule
from storyroom.recording.oggopus import Hole, NotOpus, OggOpusReader, opus_packet_samples
from storyroom.recording.timeline import SAMPLE_RATE, scan_segment
from storyroom.status import RecordingState

if TYPE_CHECKING:
    from av.container.core import Chapter as Id3Chapter

__all__ = ["FinalizeError", "finalize_recording"]

BLOCK: Final = SAMPLE_RATE  # one second: the unit of every pass
FULL_SCALE: Final = 1 << 23  # 24-bit
PAN: Final = {"a": -0.3, "b": 0.3, "facilitator": 0.0}  # -1 left … +1 right
SEAT_ORDER: Final = ("a", "b", "facilitator")
ACCESS_LUFS: Final = -16.0
ACCESS_LUFS_TOLERANCE: Final = 0.4  # re-encode beyond this (the promise is ±0.5 LU)
ACCESS_TRUE_PEAK: Final = -1.0  # dBTP, the promise
TRUE_PEAK_MARGIN: Final = 0.1  # re-encode if the measured peak comes closer than this
LIMITER_CEILING: Final = -2.5  # dBTP before MP3 encoding: room for the codec's overshoot
CALIBRATION_PEAK_MARGIN: Final = 0.5  # the sample's highest peak is not the programme's
CALIBRATION_STEP_DB: Final = 1.0
ACCESS_BIT_RATE: Final = 128_000
ACCESS_QUALITY: Final = "5"  # LAME -q 5: good quality, twice as fast as the default
NO_AUDIO_REPORT_S: Final = 1.0  # silences longer than this in a seat are listed
PACKET_LOSS_MERGE_S: Final = 2.0
PROGRESS_INTERVAL_S: Final = 0.5
# The stages' C calls (decoding a second, muxing one MP3 frame) release the GIL for
# short stretches and must win it back from the other stages' Python code; with the
# default 5 ms switch interval a thread can wait longer than it worked. (The encoder
# itself keeps the GIL out of its way: see `_Lame`.) Set for the duration of a call.
GIL_SWITCH_INTERVAL_S: Final = 0.0005
_M_MMAP_THRESHOLD: Final = -3  # glibc mallopt()
_M_ARENA_MAX: Final = -8
MMAP_THRESHOLD: Final = 4 << 20  # above any block-sized buffer
MALLOC_ARENAS: Final = 1
TEMP_SUFFIX: Final = ".part"
_TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE)
_LANGUAGES_639_2: Final = {"en": "eng", "es": "spa"}


class FinalizeError(RuntimeError):
    """Nothing could be produced; the message says why in plain words."""


# -- the plan: segments and where they go ---------------------------------------------------

_STEM_NAME: Final = re.compile(
    r"^(?P<seat>[A-Za-z0-9_]+)-(?P<index>\d+)\.(?P<ext>opus|timing\.jsonl)$"
)


@dataclass(slots=True)
class _Segment:
    seat: str
    index: int
    name: str
    opus: Path | None
    timing: Path | None
    runs: list[tuple[int, int]] = field(default_factory=list)
    """(granule_start, timeline base in samples): granule g plays at sample base + g."""
    log_end: int = 0
    """Last granule the timing log vouches for (0 without packet lines)."""
    gaps: list[tuple[float, int]] = field(default_factory=list)
    """(rec time of the packet after, packets lost) from `gap` events."""
    open_rec: float | None = None
    """The recording clock when the segment opened (from `recording.jsonl`)."""
    scan: _StemScan | None = None
    """What the stem holds, read without decoding (pass 1)."""

    def base(self, granule: int, hint: int = 0) -> tuple[int, int]:
        """Timeline base of the run holding `granule`, searching forward from `hint`."""
        runs = self.runs
        index = hint
        while index + 1 < len(runs) and granule >= runs[index + 1][0]:
            index += 1
        return runs[index][1], index

    def seconds(self, granule: int) -> float:
        return (self.base(granule)[0] + granule) / SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self.seconds(self.runs[0][0]) if self.runs else 0.0

    @property
    def end_s(self) -> float:
        return self.seconds(self.log_end) if self.runs else 0.0


@dataclass(slots=True)
class _SeatPlan:
    seat: str
    name: str
    segments: list[_Segment]
    gains: tuple[float, float]
    damage: list[Damage] = field(default_factory=list)
    placed: bool = False


@dataclass(slots=True)
class _Plan:
    seats: list[_SeatPlan]
    total: int
    pauses: list[dict[str, Any]]

    @property
    def blocks(self) -> int:
        return -(-self.total // BLOCK)


def _pan_gains(seat: str) -> tuple[float, float]:
    """Constant-power pan: a centred voice is -3 dB in each channel."""
    angle = (PAN.get(seat, 0.0) + 1) * math.pi / 4
    return math.cos(angle), math.sin(angle)


def _read_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                events.append(entry)
    return events


def _pauses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pauses from `recording.jsonl`: where on the clock, and how long in wall time."""
    pauses: list[dict[str, Any]] = []
    paused: dict[str, Any] | None = None
    for event in events:
        if event.get("type") == "pause" and isinstance(event.get("rec"), int | float):
            paused = event
        elif event.get("type") == "resume" and paused is not None:
            wall = event.get("at", 0) - paused.get("at", 0)
            pauses.append({"rec_time": float(paused["rec"]), "paused_s": max(0.0, float(wall))})
            paused = None
    if paused is not None:
        pauses.append({"rec_time": float(paused["rec"]), "paused_s": None})
    return pauses


def _plan(recording_dir: Path, spec: FinalizeInput) -> _Plan:
    stems = recording_dir / "stems"
    events = _read_events(recording_dir / "recording.jsonl")
    opened = {
        (e.get("seat"), e.get("segment")): float(e["rec"])
        for e in events
        if e.get("type") == "segment_open" and isinstance(e.get("rec"), int | float)
    }
    files: dict[tuple[str, int], dict[str, Path]] = {}
    if stems.is_dir():
        for path in stems.iterdir():
            match = _STEM_NAME.match(path.name)
            if match and path.is_file():
                key = (match["seat"], int(match["index"]))
                files.setdefault(key, {})[match["ext"]] = path
    present = {seat for seat, _ in files} | set(spec.seats)
    seat_names = [s for s in SEAT_ORDER if s in present] + sorted(present - set(SEAT_ORDER))
    plans: list[_SeatPlan] = []
    for seat in seat_names:
        plan = _SeatPlan(seat, spec.seats.get(seat, ""), [], _pan_gains(seat))
        for (file_seat, index), paths in sorted(files.items()):
            if file_seat == seat:
                plan.segments.append(
                    _Segment(
                        seat,
                        index,
                        f"{seat}-{index:02d}",
                        paths.get("opus"),
                        paths.get("timing.jsonl"),
                        open_rec=opened.get((seat, index)),
                    )
                )
        if not plan.segments:
            plan.damage.append(
                Damage(seat, "stems/", DamageKind.NO_AUDIO, "no audio was recorded from this seat")
            )
        plans.append(plan)
    if spec.duration_s is not None and spec.duration_s > 0:
        end = round(spec.duration_s * SAMPLE_RATE)
    else:  # the stems decide: place them all now (otherwise each seat's thread does)
        end = 0
        for plan in plans:
            _place_seat(plan)
            for segment in plan.segments:
                if segment.runs:
                    end = max(end, round(segment.end_s * SAMPLE_RATE))
    return _Plan(plans, end, _pauses(events))


def _place_seat(plan: _SeatPlan) -> None:
    """Read the seat's timing logs (once): where each segment's samples go."""
    if not plan.placed:
        for segment in plan.segments:
            _place(segment, segment.open_rec, plan.damage)
        plan.placed = True


def _place(segment: _Segment, open_rec: float | None, damage: list[Damage]) -> None:
    """Fill `segment.runs` from its timing log, or from its `open` time if the log is
    missing or has no packet lines (then pauses inside the segment are not known)."""
    source = f"stems/{segment.name}.timing.jsonl"
    if segment.timing is not None:
        timing = scan_segment(segment.timing)
        segment.runs = [(run.granule_start, round(run.offset * SAMPLE_RATE)) for run in timing.runs]
        if timing.runs:
            segment.log_end = timing.runs[-1].granule_end
        for event in timing.events:
            if event.get("type") == "gap" and isinstance(event.get("rec"), int | float):
                segment.gaps.append((float(event["rec"]), int(event.get("lost", 0))))
            elif event.get("type") == "open" and open_rec is None:
                if isinstance(event.get("rec"), int | float):
                    open_rec = float(event["rec"])
        if timing.damaged_lines:
            damage.append(
                Damage(
                    segment.seat,
                    source,
                    DamageKind.TIMING_LINES,
                    f"{timing.damaged_lines} unreadable line(s) in the timing log skipped",
                    segment.end_s if timing.runs else None,
                    segment.end_s if timing.runs else None,
                )
            )
    if segment.runs:
        return
    if segment.opus is None:
        return
    if open_rec is None:
        damage.append(
            Damage(
                segment.seat,
                f"stems/{segment.name}.opus",
                DamageKind.UNPLACED,
                "no timing log and no open time: this segment's audio could not be placed",
            )
        )
        return
    # the segment opened when its first (20 ms) packet arrived
    segment.runs = [(0, round((open_rec - 0.020) * SAMPLE_RATE))]
    segment.log_end = last_granule(segment.opus)
    damage.append(
        Damage(
            segment.seat,
            source,
            DamageKind.MISSING_TIMING,
            "timing log missing or empty: placed by the segment's open time "
            "(approximate; a pause inside it would not be cut)",
            open_rec,
            None,
        )
    )


# -- decoding and placing one seat --------------------------------------------------------


@dataclass(slots=True)
class _SeatResult:
    peak: float = 0.0
    audio_samples: int = 0
    decoded_segments: int = 0
    gain: float = 1.0


@dataclass(slots=True)
class _StemScan:
    """A stem read page by page without decoding: what is there and what is damaged."""

    head: bytes | None = None
    samples: int = 0
    """Audio samples in the readable packets."""
    end: int | None = None
    """Granule end of the last readable packet (None: no audio)."""
    problem: str | None = None
    """Why the file is not a readable Ogg Opus stream at all."""


def _scan_segment(segment: _Segment, damage: list[Damage]) -> None:
    """Read `segment`'s stem without decoding (CRC-checked pages, ~1/30 of the cost of
    decoding) and say what is missing, damaged or cut off."""
    opus_name = f"stems/{segment.name}.opus"
    scan = segment.scan = _StemScan()
    if segment.opus is None:
        if segment.runs:
            damage.append(
                Damage(
                    segment.seat,
                    opus_name,
                    DamageKind.MISSING_STEM,
                    "the stem file is missing (its timing log is there)",
                    segment.start_s,
                    segment.end_s,
                )
            )
        return
    if not segment.runs:
        return
    reader = OggOpusReader(segment.opus)
    try:
        for payload, end in reader.packets():
            scan.samples += opus_packet_samples(payload)
            scan.end = end
    except NotOpus as error:
        scan.problem = str(error)
        damage.append(
            Damage(
                segment.seat,
                opus_name,
                DamageKind.UNREADABLE,
                str(error),
                segment.start_s,
                segment.end_s,
            )
        )
        scan.end = None
        return
    scan.head = reader.head
    for hole in reader.holes:
        hole_end = hole.end if hole.end is not None else max(segment.log_end, hole.start)
        kind, reason = _hole_damage(hole)
        damage.append(
            Damage(
                segment.seat,
                opus_name,
                kind,
                reason,
                segment.seconds(hole.start),
                segment.seconds(hole_end),
            )
        )
    if scan.end is None:
        reason = (
            "the stem file is empty"
            if reader.pages.bytes == 0
            else "the stem has no audio pages (headers only)"
        )
        damage.append(
            Damage(
                segment.seat,
                opus_name,
                DamageKind.EMPTY_STEM,
                reason,
                segment.start_s,
                segment.end_s,
            )
        )
    elif scan.end < segment.log_end and not any(h.end is None for h in reader.holes):
        cut = "mid-page" if reader.pages.torn_tail else "at a page boundary"
        damage.append(
            Damage(
                segment.seat,
                opus_name,
                DamageKind.TRUNCATED,
                f"the stem ends {(segment.log_end - scan.end) / SAMPLE_RATE:.2f} s before "
                f"its timing log (cut off {cut}, e.g. by a crash)",
                segment.seconds(scan.end),
                segment.end_s,
            )
        )


def _hole_damage(hole: Hole) -> tuple[DamageKind, str]:
    """What a hole in a stem is called in the damage list."""
    if not hole.corrupt:
        return DamageKind.MISSING_PAGES, "page(s) missing"
    if hole.end is None:
        return DamageKind.CORRUPT, "corrupt page (checksum mismatch) at the end"
    return DamageKind.CORRUPT, "corrupt page (checksum mismatch) skipped"


def _decode_segment(
    segment: _Segment, damage: list[Damage], result: _SeatResult
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
    result.audio_samples += scan.samples
    result.decoded_segments += 1
    reached = 0
    try:
        for granule, pcm in _ffmpeg_frames(segment.opus, scan.end):
            yield from _placed(segment, granule, pcm)
            reached = granule + len(pcm)
    except av.FFmpegError:
        yield from _decode_packets(segment, reached, damage)


def _ffmpeg_frames(path: Path, end: int) -> Iterator[tuple[int, np.ndarray]]:
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


def _placed(segment: _Segment, granule: int, pcm: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Samples from `granule` on, cut where runs begin, each piece at its run's place."""
    runs = segment.runs
    while len(pcm):
        base, index = segment.base(granule)
        following = runs[index + 1][0] if index + 1 < len(runs) else None
        take = len(pcm) if following is None else max(1, min(len(pcm), following - granule))
        yield base + granule, pcm[:take]
        granule += take
        pcm = pcm[take:]


def _decode_packets(
    segment: _Segment, reached: int, damage: list[Damage]
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
                f"stems/{segment.name}.opus",
                DamageKind.UNDECODABLE,
                f"{undecodable} packet(s) could not be decoded (silence instead)",
                segment.start_s,
                segment.end_s,
            )
        )


def _packet_losses(plan: _SeatPlan) -> None:
    """Packets lost in transit (PLC-concealed in the stem), merged into ranges."""
    for segment in plan.segments:
        merged: list[list[float]] = []
        for rec, lost in segment.gaps:
            start, end = rec - 0.020 - lost * 0.020, rec - 0.020
            if merged and start - merged[-1][1] <= PACKET_LOSS_MERGE_S:
                merged[-1][1] = end
                merged[-1][2] += lost
            else:
                merged.append([start, end, lost])
        for start, end, count in merged:
            plan.damage.append(
                Damage(
                    plan.seat,
                    f"stems/{segment.name}.timing.jsonl",
                    DamageKind.PACKET_LOSS,
                    f"{int(count)} packet(s) lost in transit (concealed)",
                    max(0.0, start),
                    end,
                )
            )


def _seat_blocks(
    plan: _SeatPlan, total: int, result: _SeatResult, damage: list[Damage]
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
        for at, pcm in _decode_segment(segment, damage, result):
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
    _report_silences(plan.seat, silences, damage)


def _report_silences(seat: str, silences: list[tuple[int, int, str]], damage: list[Damage]) -> None:
    """Stretches without audio, minus what other damage already explains."""
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
                damage.append(Damage(seat, "stems/", DamageKind.NO_AUDIO, reason, a, b))


# -- measuring, limiting, encoding ------------------------------------------------------------


class Loudness:
    """Integrated loudness (EBU R128 / ITU-R BS.1770), loudness range and optionally true
    peak of stereo audio, by FFmpeg's ``ebur128`` filter, fed block by block."""

    def __init__(self, true_peak: bool = False) -> None:
        self.graph = av.filter.Graph()
        self.source = self.graph.add_abuffer(
            sample_rate=SAMPLE_RATE, format="fltp", layout="stereo", time_base=_TIME_BASE
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
        frame.time_base = _TIME_BASE
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

    def finish(self) -> dict[str, float | None]:
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
        return {
            "integrated_lufs": integrated if integrated is not None and integrated > -70 else None,
            "loudness_range_lu": number("lavfi.r128.LRA"),
            "true_peak_dbtp": _db(peak) if peak is not None else None,
        }


def _db(linear: float) -> float:
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
            self.max_reduction_db = max(self.max_reduction_db, -_db(float(gain.min())))
        return (current * gain.astype(np.float32)).astype(np.float32)


def _to_int24(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples * FULL_SCALE), -FULL_SCALE, FULL_SCALE - 1).astype(np.int32)


class _FlacStem:
    """A mono 24-bit FLAC file written block by block (STREAMINFO completed on close)."""

    def __init__(self, path: Path, tags: dict[str, str]) -> None:
        self.container: Any = av.open(str(path), "w", format="flac")
        self.container.metadata.update(tags)
        self.stream: Any = self.container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        self.stream.codec_context.format = "s32"
        self.stream.codec_context.options = {"bits_per_raw_sample": "24"}
        self.pts = 0

    def write(self, samples: np.ndarray, gain: float = 1.0) -> None:
        """float samples (n,) on the ±1 scale; FLAC's s32 takes 24-bit values left-aligned."""
        if not len(samples):
            return
        ints = _to_int24(samples * gain if gain != 1.0 else samples) << 8
        frame = av.AudioFrame.from_ndarray(ints.reshape(1, -1), format="s32", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        self.pts += len(samples)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def _flac_blocks(path: Path, total: int, scale: float = 1.0) -> Iterator[np.ndarray]:
    """A FLAC stem read back as `BLOCK`-sample float32 blocks covering [0, total):
    FFmpeg decodes and converts in C and hands back one-second frames (one trip through
    Python per second, not per FLAC frame)."""
    produced = 0
    for _, pcm in _ffmpeg_frames(path, total):
        yield pcm * np.float32(scale) if scale != 1.0 else pcm
        produced += len(pcm)
    while produced < total:
        yield np.zeros(min(BLOCK, total - produced), np.float32)
        produced += BLOCK


def _mp3_settings(codec_context: Any) -> None:
    codec_context.bit_rate = ACCESS_BIT_RATE
    codec_context.format = "fltp"
    codec_context.options = {"compression_level": ACCESS_QUALITY}


def _lame_library() -> ctypes.CDLL:
    """The LAME that FFmpeg's own `libmp3lame` encoder uses: the copy bundled with PyAV's
    FFmpeg (loading it again returns the handle already loaded), else the system's."""
    bundled = sorted((Path(av.__file__).parent.parent / "av.libs").glob("libmp3lame*.so*"))
    name = str(bundled[0]) if bundled else ctypes.util.find_library("mp3lame")
    if name is None:
        raise FinalizeError("the MP3 encoder (LAME) is not installed")
    library = ctypes.CDLL(name)
    library.lame_init.restype = ctypes.c_void_p
    library.lame_close.argtypes = [ctypes.c_void_p]
    library.lame_init_params.argtypes = [ctypes.c_void_p]
    library.lame_encode_buffer_float.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    library.lame_encode_flush.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return library


# MPEG audio layer III frame sizes: bit rates (kbit/s) by version and index, sample rates
_MP3_BIT_RATES: Final = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2
    0: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2.5
}
_MP3_SAMPLE_RATES: Final = {
    3: (44100, 48000, 32000),
    2: (22050, 24000, 16000),
    0: (11025, 12000, 8000),
}


def _mp3_frame_size(header: bytes | bytearray) -> int:
    """Bytes in the layer III frame that `header` (4 bytes) begins."""
    version, index, rate = (header[1] >> 3) & 3, header[2] >> 4, (header[2] >> 2) & 3
    if (
        header[0] != 0xFF
        or header[1] & 0xE6 != 0xE2
        or version == 1
        or index in (0, 15)
        or rate == 3
    ):
        raise FinalizeError("the MP3 encoder produced an invalid frame")
    per_frame = 144 if version == 3 else 72
    return per_frame * _MP3_BIT_RATES[version][index] * 1000 // _MP3_SAMPLE_RATES[version][rate] + (
        (header[2] >> 1) & 1
    )


class _Lame:
    """LAME called directly, one call per block, with the settings FFmpeg's `libmp3lame`
    encoder gives it for `_mp3_settings` (joint stereo, CBR, `-q`, bit reservoir, no
    Xing frame: the muxer writes that): the same bytes as encoding through PyAV.

    Why not through PyAV: its encoder takes the GIL back after every 1152-sample frame
    (~0.6 ms of work), and beside the other stages' Python code it waited for the GIL
    longer than it worked. Here a whole one-second block is encoded without the GIL
    (ctypes releases it), so the encoder keeps its core to itself."""

    FRAME: Final = 1152
    DELAY_PADDING: Final = 528 + 1  # what FFmpeg adds to LAME's delay (the decoder's)

    def __init__(self) -> None:
        self.library = _lame_library()
        handle = self.library.lame_init()
        if not handle:
            raise FinalizeError("the MP3 encoder could not start")
        self.handle = ctypes.c_void_p(handle)
        settings = (
            ("lame_set_num_channels", 2),
            ("lame_set_mode", 1),  # JOINT_STEREO
            ("lame_set_in_samplerate", SAMPLE_RATE),
            ("lame_set_out_samplerate", SAMPLE_RATE),
            ("lame_set_quality", int(ACCESS_QUALITY)),
            ("lame_set_brate", ACCESS_BIT_RATE // 1000),
            ("lame_set_bWriteVbrTag", 0),
            ("lame_set_disable_reservoir", 0),
        )
        for setter, value in settings:
            function = getattr(self.library, setter)
            function.argtypes = [ctypes.c_void_p, ctypes.c_int]
            if function(self.handle, value) < 0:
                raise FinalizeError(f"the MP3 encoder refused {setter}")
        if self.library.lame_init_params(self.handle) < 0:
            self.close()
            raise FinalizeError("the MP3 encoder refused its settings")
        self.library.lame_get_encoder_delay.argtypes = [ctypes.c_void_p]
        self.initial_padding = self.library.lame_get_encoder_delay(self.handle) + self.DELAY_PADDING
        self.samples = 0  # given to the encoder so far
        self.pending = bytearray()
        self.output = ctypes.create_string_buffer(BLOCK * 5 // 4 + 7200)  # LAME's worst case

    def encode(self, planar: np.ndarray | None) -> list[bytes]:
        """(2, n) float samples on the ±1 scale (None: flush); the complete frames."""
        if planar is None:
            written = self.library.lame_encode_flush(self.handle, self.output, len(self.output))
        else:
            self.samples += planar.shape[1]
            scaled = np.ascontiguousarray(planar * np.float32(32768), dtype=np.float32)
            for start in range(0, scaled.shape[1], BLOCK):
                part = np.ascontiguousarray(scaled[:, start : start + BLOCK])
                written = self.library.lame_encode_buffer_float(
                    self.handle,
                    part[0].ctypes.data,
                    part[1].ctypes.data,
                    part.shape[1],
                    self.output,
                    len(self.output),
                )
                if written < 0:
                    raise FinalizeError(f"the MP3 encoder failed ({written})")
                self.pending += ctypes.string_at(self.output, written)
            written = 0
        if written < 0:
            raise FinalizeError(f"the MP3 encoder failed ({written})")
        self.pending += ctypes.string_at(self.output, written)
        frames = []
        while len(self.pending) >= 4:
            size = _mp3_frame_size(self.pending[:4])
            if len(self.pending) < size:
                break
            frames.append(bytes(self.pending[:size]))
            del self.pending[:size]
        return frames

    def close(self) -> None:
        if self.handle:
            self.library.lame_close(self.handle)
            self.handle = ctypes.c_void_p()


def _skip_samples(packet: av.Packet, start: int, end: int) -> None:
    """FFmpeg's gapless side data: samples to skip at the start and end of the stream."""
    kind = packet_sidedata_type_from_literal("skip_samples")
    side = PacketSideData(kind, 10)  # type: ignore[call-arg]  # the stub omits the C constructor
    memoryview(side)[:] = struct.pack("<II2x", start, end)
    side.to_packet(packet)


class _Mp3Writer:
    """The access copy: stereo MP3 with ID3v2.4 tags and CHAP/CTOC chapters.

    Takes the frames :class:`_Lame` made; FFmpeg's MP3 muxer writes the ID3 tag and the
    Xing/LAME header (with the encoder delay and end padding, for gapless players).
    Kept apart from the encoder so that the muxing (which takes the GIL back for every
    frame) can run on another thread than the encoding."""

    def __init__(
        self, path: Path, tags: dict[str, str], chapters: list[Id3Chapter], initial_padding: int
    ) -> None:
        self.container: Any = av.open(str(path), "w", format="mp3")
        self.container.metadata.update(tags)
        if chapters:
            self.container.set_chapters(chapters)
        # the stream's parameters for the muxer; its own encoder is opened but not fed
        self.stream: Any = self.container.add_stream(
            "libmp3lame", rate=SAMPLE_RATE, layout="stereo"
        )
        _mp3_settings(self.stream.codec_context)
        self.initial_padding = initial_padding
        self.pts = -initial_padding  # of the next frame

    def write(self, frames: list[bytes], samples: int, end: bool) -> None:
        """Mux `frames`; `samples`: how many the encoder had been given when it made
        them; `end`: these are the last."""
        for number, data in enumerate(frames):
            packet = av.Packet(data)
            packet.stream = self.stream
            packet.time_base = _TIME_BASE
            packet.pts = packet.dts = self.pts
            duration = max(0, min(_Lame.FRAME, samples - self.pts))
            packet.duration = duration
            first = self.pts == -self.initial_padding
            last = end and number == len(frames) - 1
            if first or last:
                _skip_samples(
                    packet,
                    self.initial_padding if first else 0,
                    _Lame.FRAME - duration if last else 0,
                )
            self.pts += _Lame.FRAME
            self.container.mux_one(packet)

    def close(self) -> None:
        self.container.close()


class _Excerpts:
    """A fixed-size sample of the programme: up to `count` half-second excerpts, one
    from a random place in each equal stretch of the recording (memory flat in
    duration; float16 is plenty to measure what the access chain does to them).
    Spread evenly but placed at random, it is unbiased even for periodic material;
    picking loud or speech-onset blocks is not."""

    def __init__(self, blocks: int, count: int = 128) -> None:
        count = max(1, min(count, max(48, blocks // 5), 2 * blocks))
        places = random.Random(blocks)  # the same sample for the same recording
        self.wanted: dict[int, list[int]] = {}
        for stretch in range(count):
            at = (stretch + places.random()) * blocks / count
            block = min(blocks - 1, int(at))
            self.wanted.setdefault(block, []).append(min(BLOCK // 2, int((at - block) * BLOCK)))
        self.chosen: list[np.ndarray] = []

    def add(self, index: int, planar: np.ndarray) -> None:
        for start in self.wanted.get(index, ()):
            excerpt = planar[:, start : start + BLOCK // 2]
            if excerpt.shape[1] > BLOCK // 8:
                self.chosen.append(excerpt.astype(np.float16))


def _access_chain(
    excerpts: list[np.ndarray], gain_db: float, ceiling_db: float
) -> tuple[float, float | None]:
    """What the limiter and the MP3 encoder do to the programme at this gain and
    ceiling, measured on the excerpts: (loudness change in LU, true peak in dBTP of
    the decoded MP3). The encoder's low-pass and quantization take a content-dependent
    0-1 LU that the constant gain must make up for, and its noise can lift the true
    peak by a dB or so over the limiter's ceiling."""
    if not excerpts:
        return 0.0, None
    gain = np.float32(10 ** (gain_db / 20))
    fade = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 480))).astype(np.float32)
    before, after = Loudness(), Loudness(true_peak=True)
    limiter = TruePeakLimiter(ceiling_db)
    encoder = _Lame()
    decoder: Any = av.CodecContext.create("mp3float", "r")

    def encode(planar: np.ndarray | None) -> None:
        for data in encoder.encode(planar):
            for frame in decoder.decode(av.Packet(data)):
                after.push_frame(frame)

    try:
        for excerpt in excerpts:
            x = excerpt.astype(np.float32) * gain
            if x.shape[1] > 2 * len(fade):  # fade each excerpt in and out: no clicks between
                x[:, : len(fade)] *= fade
                x[:, -len(fade) :] *= fade[::-1]
            before.push(x)
            limited = limiter.process(x)
            if limited is not None:
                encode(limited)
        last = limiter.flush()
        if last is not None:
            encode(last)
        encode(None)
    finally:
        encoder.close()
    for frame in decoder.decode(None):
        after.push_frame(frame)
    measured_before = before.finish()["integrated_lufs"]
    measured_after = after.finish()
    loudness_after = measured_after["integrated_lufs"]
    if measured_before is None or loudness_after is None:
        return 0.0, measured_after["true_peak_dbtp"]
    return loudness_after - measured_before, measured_after["true_peak_dbtp"]


def _calibrate_access(
    excerpts: list[np.ndarray], mix_loudness: float | None
) -> tuple[float, float, float]:
    """The access copy's constant gain and limiter ceiling (dB), and how much the
    chain's loss changes per dB of gain (negative: more gain, more limiting).

    The chain's loss grows with the gain (more limiting), so it is measured at two
    gains at once, on two threads (the encoder releases the GIL), and the gain that
    lands on the target is interpolated. The ceiling is lowered if the sample's encoded
    true peak comes within `CALIBRATION_PEAK_MARGIN` of the limit."""
    if mix_loudness is None:
        return 0.0, LIMITER_CEILING, 0.0
    plain = ACCESS_LUFS - mix_loudness
    gains = (plain, plain + CALIBRATION_STEP_DB)
    results: list[tuple[float, float | None]] = [(0.0, None), (0.0, None)]
    stages = _Stages()

    def measure(which: int) -> Callable[[], None]:
        def run() -> None:
            results[which] = _access_chain(excerpts, gains[which], LIMITER_CEILING)

        return run

    def start() -> None:
        for which in (0, 1):
            stages.start(f"calibrate-{which}", measure(which))

    _run(stages, start)
    (loss_low, peak_low), (loss_high, peak_high) = results
    slope = max(-0.9, min(0.0, (loss_high - loss_low) / CALIBRATION_STEP_DB))
    gain = plain - loss_low / (1 + slope)
    ceiling = LIMITER_CEILING
    if peak_low is not None and peak_high is not None:
        peak = peak_low + (peak_high - peak_low) * (gain - plain) / CALIBRATION_STEP_DB
        ceiling -= max(0.0, peak - (ACCESS_TRUE_PEAK - CALIBRATION_PEAK_MARGIN))
    return min(max(gain, -40.0), 40.0), ceiling, slope


# -- threads ------------------------------------------------------------------------------------


class _Stopped(Exception):
    """Another stage failed; this one gives up quietly."""


class _Channel:
    """A small bounded queue between pipeline stages that gives up when `stop` is set."""

    def __init__(self, stop: threading.Event, size: int = 4) -> None:
        self.stop = stop
        self.items: queue.Queue[Any] = queue.Queue(size)

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self.items.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stopped


class _Stages:
    """Worker threads of one pass: any failure stops them all and is re-raised."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def channel(self, size: int = 4) -> _Channel:
        return _Channel(self.stop, size)

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except _Stopped:
                pass
            except BaseException as error:
                self.errors.append(error)
                self.stop.set()

        thread = threading.Thread(target=run, name=f"finalize-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, failed: BaseException | None = None) -> None:
        if failed is not None and not isinstance(failed, _Stopped):
            self.stop.set()
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
        if failed is not None:
            raise failed


def _run(stages: _Stages, body: Callable[[], None]) -> None:
    try:
        body()
    except BaseException as error:
        stages.join(error)
    stages.join()


# -- progress -----------------------------------------------------------------------------------


class _Progress:
    """`{"percent", "stage"}` in a JSON file, replaced atomically, at most twice a second."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.last = 0.0
        self.state: tuple[int, str] | None = None

    def __call__(self, stage: str, fraction: float, force: bool = False) -> None:
        if self.path is None:
            return
        percent = max(0, min(100, int(fraction * 100)))
        now = time.monotonic()
        if (percent, stage) == self.state or (
            not force
            and self.state is not None
            and self.state[1] == stage
            and now - self.last < PROGRESS_INTERVAL_S
        ):
            return
        self.state, self.last = (percent, stage), now
        temp = self.path.with_name(self.path.name + ".tmp")
        temp.write_text(json.dumps({"percent": percent, "stage": stage}), encoding="utf-8")
        os.replace(temp, self.path)


# -- the passes ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Analysis:
    seats: dict[str, _SeatResult]
    master_peak: float
    loudness: dict[str, float | None]
    excerpts: list[np.ndarray]


def _mix(blocks: Iterable[np.ndarray], plans: list[_SeatPlan], n: int) -> np.ndarray:
    """The voices panned and summed: one (2, seats) by (seats, n) matrix product."""
    voices = np.stack([block[:n] for block in blocks])
    pans = np.array([plan.gains for plan in plans], np.float32).T
    return pans @ voices


def _stem_tags(spec: FinalizeInput, plan: _SeatPlan) -> dict[str, str]:
    who = f"{plan.name} ({plan.seat})" if plan.name else plan.seat
    return {
        "title": f"{spec.title} - {who}",
        "artist": plan.name,
        "date": _utc(spec.started_at).strftime("%Y-%m-%d"),
        "language": spec.language,
        "comment": f"storyroom recording {spec.recording_id}, seat {plan.seat}, "
        "aligned to master.wav",
        "STORYROOM_RECORDING": spec.recording_id,
        "STORYROOM_SEAT": plan.seat,
    }


def _analyse(
    plan: _Plan, spec: FinalizeInput, temp: dict[str, Path], progress: _Progress
) -> _Analysis:
    """Pass 1: decode and place every seat, write its FLAC stem as it is (pass 2 reads
    it back instead of decoding the Opus again, and rewrites it only if the voice went
    past full scale), measure the voices and the mix."""
    stages = _Stages()
    results = {seat.seat: _SeatResult() for seat in plan.seats}
    channels = {seat.seat: stages.channel() for seat in plan.seats}
    loudness = Loudness()
    excerpts = _Excerpts(plan.blocks)
    master_peak = 0.0

    def seat_stage(seat: _SeatPlan) -> Callable[[], None]:
        def run() -> None:
            result = results[seat.seat]
            _place_seat(seat)  # reading the logs overlaps the other seats' decoding
            for segment in seat.segments:
                _scan_segment(segment, seat.damage)
            flac = _FlacStem(temp[f"stems/{seat.seat}.flac"], _stem_tags(spec, seat))
            try:
                for block in _seat_blocks(seat, plan.total, result, seat.damage):
                    if len(block):
                        result.peak = max(result.peak, float(np.abs(block).max()))
                    flac.write(block)
                    channels[seat.seat].put(block)
            finally:
                flac.close()

        return run

    def mix() -> None:
        nonlocal master_peak
        for seat in plan.seats:
            stages.start(seat.seat, seat_stage(seat))
        for index in range(plan.blocks):
            n = min(BLOCK, plan.total - index * BLOCK)
            mixed = _mix((channels[s.seat].get() for s in plan.seats), plan.seats, n)
            master_peak = max(master_peak, float(np.abs(mixed).max()))
            loudness.push(mixed)
            excerpts.add(index, mixed)
            progress("analysing", 0.01 + 0.14 * (index + 1) / plan.blocks)

    _run(stages, mix)
    return _Analysis(results, master_peak, loudness.finish(), excerpts.chosen)


@dataclass(slots=True)
class _AccessResult:
    gain_db: float
    ceiling_db: float
    measured: dict[str, float | None]
    limited_s: float
    max_reduction_db: float


def _access_stage(
    stages: _Stages,
    path: Path,
    spec: FinalizeInput,
    chapters: list[Id3Chapter],
    blocks: _Channel,
    out: dict[str, Any],
) -> None:
    """Start the MP3 encoder thread and the thread that writes and measures what it made."""
    packets = stages.channel(size=64)
    meter = Loudness(true_peak=True)

    lame = _Lame()

    def encode() -> None:
        try:
            while (planar := blocks.get()) is not None:
                packets.put((lame.encode(planar), lame.samples, False))
            packets.put((lame.encode(None), lame.samples, True))
        finally:
            lame.close()
            packets.put(None)

    def measure() -> None:
        # what the encoder made: muxed, then decoded a batch of frames at a time (FFmpeg's
        # decoder takes several MP3 frames in one packet: one trip through Python per
        # batch) and measured by the same ebur128 meter (4x-oversampled true peak) as
        # anyone's
        writer = _Mp3Writer(path, _access_tags(spec), chapters, lame.initial_padding)
        decoder: Any = av.CodecContext.create("mp3float", "r")

        def take(frames: list[av.AudioFrame]) -> None:
            if frames:
                meter.push(np.concatenate([frame.to_ndarray() for frame in frames], axis=1))

        try:
            while (batch := packets.get()) is not None:
                frames, samples, end = batch
                writer.write(frames, samples, end)
                if frames:
                    take(decoder.decode(av.Packet(b"".join(frames))))
        finally:
            writer.close()
        take(decoder.decode(None))
        out["measured"] = meter.finish()

    stages.start("mp3", encode)
    stages.start("measure", measure)


def _access_tags(spec: FinalizeInput) -> dict[str, str]:
    return {
        "title": spec.title,
        "date": _utc(spec.started_at).strftime("%Y-%m-%d"),
        "language": _LANGUAGES_639_2.get(spec.language, spec.language),
        "comment": f"storyroom recording {spec.recording_id} (access copy, {ACCESS_LUFS:g} LUFS)",
        "encoded_by": spec.software,
    }


def _write_master_and_access(
    plan: _Plan,
    spec: FinalizeInput,
    analysis: _Analysis,
    temp: dict[str, Path],
    master: tuple[Bext, dict[str, str], list[CuePoint]],
    chapters: list[Id3Chapter],
    access_gain_db: float,
    ceiling_db: float,
    progress: _Progress,
) -> tuple[WaveformPeaks, _AccessResult]:
    """Pass 2: read the stems back; write the master, the access copy and the picture.

    A voice that went past full scale is decoded again and its stem rewritten with a
    gain (pass 1 wrote it clipped); the mix takes every voice as it is."""
    stages = _Stages()
    master_gain = _master_gain(analysis.master_peak)
    waveform = WaveformPeaks(plan.total)
    limiter = TruePeakLimiter(ceiling_db)
    access_gain = np.float32(10 ** (access_gain_db / 20))
    clipped = [seat for seat in plan.seats if analysis.seats[seat.seat].gain != 1.0]
    sources = {seat.seat: stages.channel() for seat in clipped}
    to_mp3 = stages.channel(size=8)
    access_out: dict[str, Any] = {}
    bext, info, cues = master

    def source(seat: _SeatPlan) -> Callable[[], None]:
        gain = analysis.seats[seat.seat].gain

        def run() -> None:
            path = temp[f"stems/{seat.seat}.flac"]
            path.unlink()
            flac = _FlacStem(path, _stem_tags(spec, seat))
            try:
                for block in _seat_blocks(seat, plan.total, _SeatResult(), []):
                    flac.write(block, gain)
                    sources[seat.seat].put(block)
            finally:
                flac.close()

        return run

    def mix() -> None:
        for seat in clipped:
            stages.start(seat.seat, source(seat))
        voices = [
            (
                _channel_blocks(sources[seat.seat], plan.blocks)
                if seat.seat in sources
                else _flac_blocks(temp[f"stems/{seat.seat}.flac"], plan.total)
            )
            for seat in plan.seats
        ]
        _access_stage(stages, temp["access.mp3"], spec, chapters, to_mp3, access_out)
        with BroadcastWavWriter(
            temp["master.wav"],
            sample_rate=SAMPLE_RATE,
            channels=2,
            bits=24,
            bext=bext,
            info=info,
            cues=cues,
        ) as wav:
            for index, blocks in enumerate(zip(*voices, strict=True)):
                n = min(BLOCK, plan.total - index * BLOCK)
                mixed = _mix(blocks, plan.seats, n)
                scaled = mixed * np.float32(master_gain) if master_gain != 1.0 else mixed
                wav.write(_pcm24(scaled))
                waveform.add(scaled)
                limited = limiter.process(mixed * access_gain)
                if limited is not None:
                    to_mp3.put(limited)
                progress("encoding", 0.17 + 0.78 * (index + 1) / plan.blocks)
        last = limiter.flush()
        if last is not None:
            to_mp3.put(last)
        to_mp3.put(None)

    _run(stages, mix)
    return waveform, _AccessResult(
        access_gain_db,
        ceiling_db,
        access_out["measured"],
        limiter.limited_samples / SAMPLE_RATE,
        limiter.max_reduction_db,
    )


def _channel_blocks(channel: _Channel, count: int) -> Iterator[np.ndarray]:
    for _ in range(count):
        yield channel.get()


def _rewrite_access(
    plan: _Plan,
    spec: FinalizeInput,
    analysis: _Analysis,
    temp: dict[str, Path],
    chapters: list[Id3Chapter],
    gain_db: float,
    ceiling_db: float,
    progress: _Progress,
) -> _AccessResult:
    """The access copy again from the finished stems, with a corrected gain or ceiling."""
    stages = _Stages()
    limiter = TruePeakLimiter(ceiling_db)
    access_gain = np.float32(10 ** (gain_db / 20))
    to_mp3 = stages.channel()
    access_out: dict[str, Any] = {}
    temp["access.mp3"].unlink(missing_ok=True)

    def mix() -> None:
        _access_stage(stages, temp["access.mp3"], spec, chapters, to_mp3, access_out)
        readers = [
            _flac_blocks(
                temp[f"stems/{seat.seat}.flac"], plan.total, 1 / analysis.seats[seat.seat].gain
            )
            for seat in plan.seats
        ]
        for index, blocks in enumerate(zip(*readers, strict=True)):
            n = min(BLOCK, plan.total - index * BLOCK)
            limited = limiter.process(_mix(blocks, plan.seats, n) * access_gain)
            if limited is not None:
                to_mp3.put(limited)
            progress("encoding access copy", 0.94)
        last = limiter.flush()
        if last is not None:
            to_mp3.put(last)
        to_mp3.put(None)

    _run(stages, mix)
    return _AccessResult(
        gain_db,
        ceiling_db,
        access_out["measured"],
        limiter.limited_samples / SAMPLE_RATE,
        limiter.max_reduction_db,
    )


def _master_gain(peak: float) -> float:
    """1, or just enough attenuation that the 24-bit master cannot clip."""
    limit = (FULL_SCALE - 4) / FULL_SCALE
    return 1.0 if peak <= limit else limit / peak


def _pcm24(planar: np.ndarray) -> bytes:
    """(2, n) float → interleaved little-endian 24-bit PCM bytes."""
    ints = np.ascontiguousarray(_to_int24(planar).T, dtype="<i4")
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


# -- chapters, metadata, manifest ----------------------------------------------------------------


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _cue_points(spec: FinalizeInput, duration: float) -> list[dict[str, Any]]:
    """Cues on the clock, in order; a cue re-made at the same instant replaces the last."""
    cues: list[dict[str, Any]] = []
    for cue in sorted(spec.cues, key=lambda c: (c.rec_time, c.seq)):
        at = min(max(cue.rec_time, 0.0), duration)
        title = cue.text or cue.question_id or "Question"
        entry = {**cue.to_json(), "rec_time": round(at, 3), "title": " ".join(title.split())}
        if cues and round(cues[-1]["rec_time"] * 1000) == round(at * 1000):
            cues[-1] = entry
        else:
            cues.append(entry)
    return cues


def _chapters(cues: list[dict[str, Any]], duration: float) -> list[dict[str, Any]]:
    chapters = []
    for number, cue in enumerate(cues):
        end = cues[number + 1]["rec_time"] if number + 1 < len(cues) else duration
        chapters.append({"start_s": cue["rec_time"], "end_s": round(end, 3), "title": cue["title"]})
    return chapters


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _webvtt(chapters: list[dict[str, Any]]) -> str:
    lines = ["WEBVTT", ""]
    for number, chapter in enumerate(chapters, 1):
        lines += [
            str(number),
            f"{_vtt_time(chapter['start_s'])} --> {_vtt_time(chapter['end_s'])}",
            chapter["title"].replace("-->", "→"),
            "",
        ]
    return "\n".join(lines)


def _master_metadata(
    spec: FinalizeInput,
    plan: _Plan,
    cues: list[dict[str, Any]],
    markers: list[dict[str, Any]],
    loudness: MasterLoudness,
) -> tuple[Bext, dict[str, str], list[CuePoint]]:
    started = _utc(spec.started_at)
    midnight = started.replace(hour=0, minute=0, second=0, microsecond=0)
    names = ", ".join(f"{p.seat}={p.name}" for p in plan.seats if p.name)
    description = f"{spec.title} - storyroom recording {spec.recording_id}, take {spec.take}"
    if spec.status is RecordingState.INTERRUPTED:
        description += " (interrupted)"
    history = (
        "A=OPUS,F=48000,M=mono,T=WebRTC browser capture; one stem per seat and connection\r\n"
        f"A=PCM,F=48000,W=24,M=stereo,T={spec.software}; decoded, aligned to the recording "
        "clock and mixed (a left, b right, facilitator centre)\r\n"
    )
    bext = Bext(
        description=description,
        originator=spec.originator,
        originator_reference=spec.recording_id,
        origination_date=started.strftime("%Y-%m-%d"),
        origination_time=started.strftime("%H:%M:%S"),
        time_reference=round((spec.started_at - midnight.timestamp()) * SAMPLE_RATE),
        coding_history=history,
        loudness_value=loudness.integrated_lufs,
        loudness_range=loudness.loudness_range_lu,
    )
    info = {
        "INAM": spec.title,
        "ICRD": started.strftime("%Y-%m-%d"),
        "ISFT": spec.software,
        "ILNG": spec.language,
        "ICMT": f"storyroom session {spec.session_id}, recording {spec.recording_id}, "
        f"take {spec.take}; seats: {names}; times are UTC",
    }
    points = [CuePoint(round(c["rec_time"] * SAMPLE_RATE), c["title"]) for c in cues]
    points += [CuePoint(round(m["rec_time"] * SAMPLE_RATE), m["label"]) for m in markers]
    points.sort(key=lambda p: p.sample)
    return bext, info, points


def _markers(spec: FinalizeInput, plan: _Plan, duration: float) -> list[dict[str, Any]]:
    """The facilitator's markers, and one at each pause (from `recording.jsonl`, with
    how long it lasted); a plain "pause"/"resume" marker at the same place is dropped."""
    paused_at = [pause["rec_time"] for pause in plan.pauses]
    markers: list[dict[str, Any]] = [
        {
            "seq": m.seq,
            "kind": "marker",
            "label": m.label or "Marker",
            "rec_time": round(min(max(m.rec_time, 0.0), duration), 3),
        }
        for m in spec.markers
        if not (
            m.label.lower() in ("pause", "resume")
            and any(abs(m.rec_time - at) < 0.1 for at in paused_at)
        )
    ]
    for pause in plan.pauses:
        length = pause["paused_s"]
        label = f"Paused {length:.0f} s" if length is not None else "Paused"
        markers.append(
            {
                "seq": None,
                "kind": "pause",
                "label": label,
                "rec_time": round(min(max(pause["rec_time"], 0.0), duration), 3),
                "paused_s": None if length is None else round(length, 3),
            }
        )
    markers.sort(key=lambda m: float(m["rec_time"]))
    return markers


_KINDS: Final = {
    "master.wav": FileKind.MASTER,
    "access.mp3": FileKind.ACCESS,
    "chapters.vtt": FileKind.CHAPTERS,
    "chapters.json": FileKind.CHAPTERS,
    "metadata.json": FileKind.METADATA,
    "manifest-sha256.txt": FileKind.MANIFEST,
    "waveform.svg": FileKind.WAVEFORM,
}


def _kind(name: str) -> FileKind:
    if name in _KINDS:
        return _KINDS[name]
    if name.startswith("stems/") and name.endswith(".flac"):
        return FileKind.STEM
    return FileKind.SOURCE


def _file_entry(root: Path, name: str, path: Path | None = None) -> FinalizedFile:
    path = path or root / name
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return FinalizedFile(name, _kind(name), path.stat().st_size, digest)


def _source_files(root: Path, outputs: set[str], progress_path: Path | None) -> list[str]:
    skip = {str(progress_path.resolve())} if progress_path is not None else set()
    names = []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if (
            not path.is_file()
            or name in outputs
            or any(part.startswith(".") for part in path.relative_to(root).parts)
            or (name.startswith("stems/") and name.endswith(".flac"))
            or name.endswith((TEMP_SUFFIX, ".tmp"))
            or str(path.resolve()) in skip
        ):
            continue
        names.append(name)
    return names


def _write_json(path: Path, value: Any) -> None:
    with open(path, "x", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")


def _steady_malloc() -> None:
    """Serve the second-long sample blocks from one reused heap, flat in duration.

    By default glibc gives each thread its own heap (arena) and raises its mmap
    threshold as block-sized buffers are freed: the blocks, allocated on one thread
    and freed on another, then fragment several heaps and the process keeps ~20 MB more
    than it uses. Keeping them all mmap'd instead (a low fixed threshold) stays flat
    but costs a fresh zero-filled mapping, page faults and a cross-core TLB flush for
    every block: a third of the CPU of the stages beside the encoder. One arena and a
    threshold above any block size reuse the same memory block after block. Process-
    wide and harmless for the worker process this runs in (the stages allocate a few
    dozen buffers a second, so the shared arena's lock is not contended); a no-op where
    there is no glibc."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


# -- the entry point -----------------------------------------------------------------------------


def finalize_recording(
    recording_dir: Path, spec: FinalizeInput, progress_path: Path | None = None
) -> Finalized:
    """Finalize one recording in place; see the module docstring. Blocking, CPU-bound,
    run it in a worker process. Returns the duration, the files (with sizes and sha256),
    the chapters, the loudness figures and the damage found.

    Raises :class:`FinalizeError` when there is no decodable audio at all.
    """
    root = Path(recording_dir)
    progress = _Progress(progress_path)
    progress("reading", 0.0, force=True)
    for leftover in root.rglob(f"*{TEMP_SUFFIX}"):
        leftover.unlink()
    plan = _plan(root, spec)
    if not any(seat.segments for seat in plan.seats):
        raise FinalizeError("there is no recorded audio to finalize")
    if plan.total <= 0:
        raise FinalizeError("the recording has no length: nothing was recorded")
    duration = plan.total / SAMPLE_RATE
    outputs = [
        "master.wav",
        *(f"stems/{seat.seat}.flac" for seat in plan.seats),
        "access.mp3",
        "chapters.vtt",
        "chapters.json",
        "waveform.svg",
        "metadata.json",
    ]
    temp = {name: root / (name + TEMP_SUFFIX) for name in outputs}
    _steady_malloc()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        return _finalize(root, spec, plan, duration, temp, progress, progress_path)
    finally:
        sys.setswitchinterval(switch_interval)
        for path in temp.values():
            path.unlink(missing_ok=True)


def _finalize(
    root: Path,
    spec: FinalizeInput,
    plan: _Plan,
    duration: float,
    temp: dict[str, Path],
    progress: _Progress,
    progress_path: Path | None,
) -> Finalized:
    analysis = _analyse(plan, spec, temp, progress)
    if not any(result.audio_samples for result in analysis.seats.values()):
        raise FinalizeError("none of the recorded audio could be decoded")
    for seat in plan.seats:
        _packet_losses(seat)
        result = analysis.seats[seat.seat]
        if result.peak > (FULL_SCALE - 1) / FULL_SCALE:
            result.gain = (FULL_SCALE - 4) / FULL_SCALE / result.peak
    master_gain = _master_gain(analysis.master_peak)
    mix_loudness = analysis.loudness["integrated_lufs"]
    master_loudness = MasterLoudness(
        integrated_lufs=None if mix_loudness is None else round(mix_loudness + _db(master_gain), 2),
        loudness_range_lu=analysis.loudness["loudness_range_lu"],
        sample_peak_dbfs=round(_db(analysis.master_peak * master_gain), 2)
        if analysis.master_peak > 0
        else None,
        gain_db=round(_db(master_gain), 3),
    )
    cues = _cue_points(spec, duration)
    markers = _markers(spec, plan, duration)
    chapters = _chapters(cues, duration)
    id3_chapters: list[Id3Chapter] = [
        {
            "id": number,
            "start": round(c["start_s"] * 1000),
            "end": round(c["end_s"] * 1000),
            "time_base": fractions.Fraction(1, 1000),
            "metadata": {"title": c["title"]},
        }
        for number, c in enumerate(chapters)
    ]
    master = _master_metadata(spec, plan, cues, markers, master_loudness)
    progress("calibrating the access copy", 0.2, force=True)
    gain_db, ceiling_db, slope = _calibrate_access(analysis.excerpts, mix_loudness)
    analysis.excerpts.clear()
    waveform, access = _write_master_and_access(
        plan, spec, analysis, temp, master, id3_chapters, gain_db, ceiling_db, progress
    )
    encodes = 1
    for _ in range(2):  # rarely: the excerpts did not predict the whole well enough
        measured_lufs = access.measured["integrated_lufs"]
        peak = access.measured["true_peak_dbtp"]
        off = 0.0 if measured_lufs is None else ACCESS_LUFS - measured_lufs
        over = 0.0 if peak is None else peak - (ACCESS_TRUE_PEAK - TRUE_PEAK_MARGIN)
        if abs(off) <= ACCESS_LUFS_TOLERANCE and over <= 0:
            break
        access = _rewrite_access(
            plan,
            spec,
            analysis,
            temp,
            id3_chapters,
            access.gain_db + off / (1 + slope),
            access.ceiling_db - (over + 0.2 if over > 0 else 0.0),
            progress,
        )
        encodes += 1
    progress("writing metadata", 0.96, force=True)
    (temp["chapters.vtt"]).write_text(_webvtt(chapters), encoding="utf-8")
    _write_json(
        temp["chapters.json"],
        {
            "version": "1.2.0",
            "chapters": [{"startTime": c["start_s"], "title": c["title"]} for c in chapters],
        },
    )
    temp["waveform.svg"].write_text(
        waveform_svg(waveform.peaks, duration, [(c["start_s"], c["title"]) for c in chapters]),
        encoding="utf-8",
    )
    loudness = LoudnessReport(
        master_loudness,
        AccessLoudness(
            integrated_lufs=access.measured["integrated_lufs"],
            true_peak_dbtp=None
            if access.measured["true_peak_dbtp"] is None
            else round(access.measured["true_peak_dbtp"], 2),
            loudness_range_lu=access.measured["loudness_range_lu"],
            target_lufs=ACCESS_LUFS,
            true_peak_limit_dbtp=ACCESS_TRUE_PEAK,
            gain_db=round(access.gain_db, 2),
            limiter_ceiling_dbtp=access.ceiling_db,
            limited_s=round(access.limited_s, 2),
            max_gain_reduction_db=round(access.max_reduction_db, 2),
            encodes=encodes,
        ),
    )
    damage = sorted(
        (d for seat in plan.seats for d in seat.damage),
        key=lambda d: (d.seat, round(d.start_s, 3) if d.start_s is not None else -1),
    )
    media = [name for name in temp if name != "metadata.json"]
    files = [_file_entry(root, name, temp[name]) for name in media]
    sources = _source_files(root, set(temp) | {"manifest-sha256.txt"}, progress_path)
    files += [_file_entry(root, name) for name in sources]
    metadata = {
        "recording_id": spec.recording_id,
        "session_id": spec.session_id,
        "title": spec.title,
        "language": spec.language,
        "take": spec.take,
        "status": spec.status.value,
        "started_at": _utc(spec.started_at).isoformat(),
        "duration_s": round(duration, 3),
        "seats": {p.seat: {"name": p.name} for p in plan.seats},
        "consent": {seat: flags.to_json() for seat, flags in spec.consent.items()},
        "cues": [{k: c.get(k) for k in ("seq", "question_id", "text", "rec_time")} for c in cues],
        "markers": markers,
        "chapters": chapters,
        "loudness": loudness.to_json(),
        "stems": {
            p.seat: {
                "file": f"stems/{p.seat}.flac",
                "segments": len(p.segments),
                "decoded_segments": analysis.seats[p.seat].decoded_segments,
                "audio_s": round(analysis.seats[p.seat].audio_samples / SAMPLE_RATE, 3),
                "peak_dbfs": round(_db(analysis.seats[p.seat].peak), 2)
                if analysis.seats[p.seat].peak > 0
                else None,
                "gain_db": round(_db(analysis.seats[p.seat].gain), 3),
                "pan": PAN.get(p.seat, 0.0),
            }
            for p in plan.seats
        },
        "damaged": [d.to_json() for d in damage],
        "format": {
            "master": "Broadcast WAV (bext, LIST-INFO, cue/adtl), 48 kHz, 24-bit, stereo",
            "stems": "FLAC, 48 kHz, 24-bit, mono, aligned to the master",
            "access": f"MP3 {ACCESS_BIT_RATE // 1000} kbit/s stereo, ID3v2.4 CHAP/CTOC",
            "time": "seconds on the recording clock (pauses excluded); dates UTC",
        },
        "software": spec.software,
        "originator": spec.originator,
        "finalized_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": [f.to_json() for f in files],
    }
    _write_json(temp["metadata.json"], metadata)
    files.append(_file_entry(root, "metadata.json", temp["metadata.json"]))
    # all complete: move into place, stale stems out, then the manifest over everything
    for name, path in temp.items():
        os.replace(path, root / name)
    for stale in (root / "stems").glob("*.flac"):
        if f"stems/{stale.name}" not in temp:
            stale.unlink()
    manifest = root / "manifest-sha256.txt"
    manifest_temp = root / ("manifest-sha256.txt" + TEMP_SUFFIX)
    manifest_temp.write_text(
        "".join(f"{f.sha256}  {f.name}\n" for f in sorted(files, key=lambda f: f.name)),
        encoding="utf-8",
    )
    os.replace(manifest_temp, manifest)
    files.append(_file_entry(root, "manifest-sha256.txt"))
    progress("done", 1.0, force=True)
    return Finalized(
        duration_s=round(duration, 3),
        files=tuple(files),
        chapters=tuple(Chapter(c["start_s"], c["title"]) for c in chapters),
        loudness=loudness,
        damaged=tuple(damage),
    )
