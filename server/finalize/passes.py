"""The two passes over the audio, both streamed in one-second blocks, never holding a
stem or the mix in memory, each a set of threads (:mod:`storyroom.finalize.pipeline`).

1. **Analyse** — each seat's Opus segments are decoded (one thread per seat), placed
   on the recording clock and written as the seat's 24-bit FLAC stem; the blocks are
   mixed to measure each voice's and the master's peak and the mix's integrated
   loudness, keeping a fixed-size sample of the programme for the access copy.
2. **Write** — the FLAC stems are read back (a voice that went past full scale is
   decoded again instead, and its stem rewritten with a constant gain) and mixed into
   the Broadcast WAV master (a constant gain only if it would clip), the waveform and
   the access copy (:mod:`storyroom.finalize.access`).

The MP3 encoder is the slowest stage by far and cannot start before pass 1 has
measured the whole programme. Everything else runs beside it on the other core, and
each stem is decoded once: the machine is often shared (other rooms, other
finalizations), so what counts is the total CPU, not only the wall time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storyroom.finalize.access import AccessCopy, AccessResult, Excerpts
from storyroom.finalize.bwf import Bext, BroadcastWavWriter, CuePoint
from storyroom.finalize.contracts import Damage, FinalizeInput
from storyroom.finalize.damage import stem_damage
from storyroom.finalize.decode import VoiceStats, flac_blocks, scan_stem, seat_blocks
from storyroom.finalize.encoders import FULL_SCALE, FlacStem, pcm24
from storyroom.finalize.loudness import LoudnessMeasurement, LoudnessMeter
from storyroom.finalize.merge import SeatMerge
from storyroom.finalize.outputs import Outline, stem_tags
from storyroom.finalize.pipeline import Stages, received, run_stages
from storyroom.finalize.plan import BLOCK, Plan, SeatPlan, place_seat
from storyroom.finalize.progress import ProgressFile
from storyroom.finalize.waveform import WaveformPeaks
from storyroom.recording import layout
from storyroom.recording.timeline import SAMPLE_RATE
from storyroom.status import FinalizeStage

MasterChunks = tuple[Bext, dict[str, str], list[CuePoint]]


@dataclass(slots=True)
class Analysis:
    voices: dict[str, VoiceStats]
    master_peak: float
    loudness: LoudnessMeasurement
    excerpts: list[np.ndarray]
    merges: Mapping[str, SeatMerge]
    """Seats whose browser capture fills their stem's gaps (none without captures)."""


def mix(blocks: Iterable[np.ndarray], seats: list[SeatPlan], n: int) -> np.ndarray:
    """The voices panned and summed: one (2, seats) by (seats, n) matrix product."""
    voices = np.stack([block[:n] for block in blocks])
    pans = np.array([seat.gains for seat in seats], np.float32).T
    return pans @ voices


def master_gain(peak: float) -> float:
    """1, or just enough attenuation that the 24-bit master cannot clip."""
    limit = (FULL_SCALE - 4) / FULL_SCALE
    return 1.0 if peak <= limit else limit / peak


def voice_gain(peak: float) -> float:
    """1, or the gain that keeps a voice that went past full scale within its stem."""
    return (FULL_SCALE - 4) / FULL_SCALE / peak if peak > (FULL_SCALE - 1) / FULL_SCALE else 1.0


def voice_blocks(
    seat: SeatPlan,
    total: int,
    stats: VoiceStats,
    damage: list[Damage],
    merges: Mapping[str, SeatMerge],
) -> Iterator[np.ndarray]:
    """The seat's voice on the timeline: its server stem, gaps filled from its browser
    capture when it has one (:mod:`~storyroom.finalize.merge`)."""
    blocks = seat_blocks(seat, total, stats, damage)
    merge = merges.get(seat.seat)
    if merge is None:
        return blocks
    merge.prepare()
    return merge.blocks(blocks)


def analyse(
    plan: Plan,
    job: FinalizeInput,
    temp: Mapping[str, Path],
    progress: ProgressFile,
    merges: Mapping[str, SeatMerge],
) -> Analysis:
    """Pass 1: decode and place every seat (its capture merged in, if any), write its
    FLAC stem as it is (pass 2 reads it back instead of decoding the Opus again, and
    rewrites it only if the voice went past full scale), measure the voices and the
    mix."""
    stages = Stages()
    voices = {seat.seat: VoiceStats() for seat in plan.seats}
    channels = {seat.seat: stages.channel() for seat in plan.seats}
    meter = LoudnessMeter()
    excerpts = Excerpts(plan.blocks)
    master_peak = 0.0

    def seat_stage(seat: SeatPlan) -> Callable[[], None]:
        def run() -> None:
            voice = voices[seat.seat]
            place_seat(seat)  # reading the logs overlaps the other seats' decoding
            for segment in seat.segments:
                segment.scan = scan_stem(segment)
                seat.damage += stem_damage(segment, segment.scan)
            flac = FlacStem(temp[layout.finalized_stem(seat.seat)], stem_tags(job, seat))
            try:
                for block in voice_blocks(seat, plan.total, voice, seat.damage, merges):
                    if len(block):
                        voice.peak = max(voice.peak, float(np.abs(block).max()))
                    flac.write(block)
                    channels[seat.seat].put(block)
            finally:
                flac.close()

        return run

    def mixing() -> None:
        nonlocal master_peak
        for seat in plan.seats:
            stages.start(seat.seat, seat_stage(seat))
        for index in range(plan.blocks):
            n = min(BLOCK, plan.total - index * BLOCK)
            mixed = mix((channels[s.seat].get() for s in plan.seats), plan.seats, n)
            master_peak = max(master_peak, float(np.abs(mixed).max()))
            meter.push(mixed)
            excerpts.add(index, mixed)
            progress(FinalizeStage.ANALYSING, 0.01 + 0.14 * (index + 1) / plan.blocks)

    run_stages(stages, mixing)
    return Analysis(voices, master_peak, meter.finish(), excerpts.chosen, merges)


def write_master_and_access(
    plan: Plan,
    job: FinalizeInput,
    analysis: Analysis,
    temp: Mapping[str, Path],
    master: MasterChunks,
    outline: Outline,
    gain_db: float,
    ceiling_db: float,
    progress: ProgressFile,
) -> tuple[WaveformPeaks, AccessResult]:
    """Pass 2: read the stems back; write the master, the access copy and the picture.

    A voice that went past full scale is decoded again and its stem rewritten with a
    gain (pass 1 wrote it clipped); the mix takes every voice as it is."""
    stages = Stages()
    gain = master_gain(analysis.master_peak)
    waveform = WaveformPeaks(plan.total)
    clipped = [seat for seat in plan.seats if analysis.voices[seat.seat].gain != 1.0]
    sources = {seat.seat: stages.channel() for seat in clipped}
    access = AccessCopy(
        stages, temp[layout.ACCESS_COPY], job, outline.id3_chapters(), gain_db, ceiling_db, 8
    )
    bext, info, cues = master

    def source(seat: SeatPlan) -> Callable[[], None]:
        voice_gain = analysis.voices[seat.seat].gain

        def run() -> None:
            path = temp[layout.finalized_stem(seat.seat)]
            path.unlink()
            flac = FlacStem(path, stem_tags(job, seat))
            try:
                blocks = voice_blocks(seat, plan.total, VoiceStats(), [], analysis.merges)
                for block in blocks:
                    flac.write(block, voice_gain)
                    sources[seat.seat].put(block)
            finally:
                flac.close()

        return run

    def mixing() -> None:
        for seat in clipped:
            stages.start(seat.seat, source(seat))
        voices = [
            (
                received(sources[seat.seat], plan.blocks)
                if seat.seat in sources
                else flac_blocks(temp[layout.finalized_stem(seat.seat)], plan.total)
            )
            for seat in plan.seats
        ]
        access.start()
        with BroadcastWavWriter(
            temp[layout.MASTER],
            sample_rate=SAMPLE_RATE,
            channels=2,
            bits=24,
            bext=bext,
            info=info,
            cues=cues,
        ) as wav:
            for index, blocks in enumerate(zip(*voices, strict=True)):
                n = min(BLOCK, plan.total - index * BLOCK)
                mixed = mix(blocks, plan.seats, n)
                scaled = mixed * np.float32(gain) if gain != 1.0 else mixed
                wav.write(pcm24(scaled))
                waveform.add(scaled)
                access.add(mixed)
                progress(FinalizeStage.ENCODING, 0.17 + 0.78 * (index + 1) / plan.blocks)
        access.end()

    run_stages(stages, mixing)
    return waveform, access.result()


def rewrite_access(
    plan: Plan,
    job: FinalizeInput,
    analysis: Analysis,
    temp: Mapping[str, Path],
    outline: Outline,
    gain_db: float,
    ceiling_db: float,
    progress: ProgressFile,
) -> AccessResult:
    """The access copy again from the finished stems, with a corrected gain or ceiling."""
    stages = Stages()
    temp[layout.ACCESS_COPY].unlink(missing_ok=True)
    access = AccessCopy(
        stages, temp[layout.ACCESS_COPY], job, outline.id3_chapters(), gain_db, ceiling_db
    )

    def mixing() -> None:
        access.start()
        readers = [
            flac_blocks(
                temp[layout.finalized_stem(seat.seat)],
                plan.total,
                1 / analysis.voices[seat.seat].gain,
            )
            for seat in plan.seats
        ]
        for index, blocks in enumerate(zip(*readers, strict=True)):
            n = min(BLOCK, plan.total - index * BLOCK)
            access.add(mix(blocks, plan.seats, n))
            progress(FinalizeStage.ENCODING_ACCESS, 0.94)
        access.end()

    run_stages(stages, mixing)
    return access.result()
