"""Finalization: from a recording's raw stems and timing logs to the archival files.

Runs in a worker process (the job's, :mod:`storyroom.finalize.jobs`): typed input
(:class:`~storyroom.finalize.contracts.FinalizeInput`) in, typed result
(:class:`~storyroom.finalize.contracts.Finalized`) out; no asyncio, database or
sockets. The stages, in the order :func:`finalize_recording` runs them:

- :mod:`~storyroom.finalize.plan` — which segments each seat has and where their
  samples go on the recording clock (built on :mod:`storyroom.recording.timeline`);
- :mod:`~storyroom.finalize.passes` — pass 1 decodes (:mod:`~storyroom.finalize.decode`),
  writes the FLAC stems and measures (:mod:`~storyroom.finalize.loudness`); pass 2 mixes
  the master, the waveform and the access copy (:mod:`~storyroom.finalize.access`,
  calibrated on a sample of the programme in between), all on threads
  (:mod:`~storyroom.finalize.pipeline`) feeding the encoders
  (:mod:`~storyroom.finalize.encoders`);
- :mod:`~storyroom.finalize.outputs` — chapters, `metadata.json` (with the
  :mod:`~storyroom.finalize.damage` found), the file list and the sha256 manifest,
  every output first under a ``.part`` name and renamed only when the set is complete.

Damage never stops finalization; only a recording with no decodable audio at all
raises :class:`~storyroom.finalize.contracts.FinalizeError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from storyroom.finalize import access, damage, outputs
from storyroom.finalize.contracts import (
    AccessLoudness,
    Finalized,
    FinalizeError,
    FinalizeInput,
    LoudnessReport,
    MasterLoudness,
)
from storyroom.finalize.loudness import db
from storyroom.finalize.merge import SeatMerge, seat_merges
from storyroom.finalize.passes import (
    Analysis,
    analyse,
    master_gain,
    rewrite_access,
    voice_gain,
    write_master_and_access,
)
from storyroom.finalize.plan import Plan, make_plan
from storyroom.finalize.progress import ProgressFile
from storyroom.finalize.waveform import WaveformPeaks, waveform_json, waveform_svg
from storyroom.recording import layout
from storyroom.recording.timeline import SAMPLE_RATE
from storyroom.status import FinalizeStage

__all__ = ["finalize_recording"]

# The stages' C calls (decoding a second, muxing one MP3 frame) release the GIL for
# short stretches and must win it back from the other stages' Python code; with the
# default 5 ms switch interval a thread can wait longer than it worked. (The encoder
# itself keeps the GIL out of its way: see `encoders.Lame`.) Set for the duration of a
# call.
GIL_SWITCH_INTERVAL_S: Final = 0.0005
_M_MMAP_THRESHOLD: Final = -3  # glibc mallopt()
_M_ARENA_MAX: Final = -8
MMAP_THRESHOLD: Final = 4 << 20  # above any block-sized buffer
MALLOC_ARENAS: Final = 1
MAX_ACCESS_REWRITES: Final = 2


def finalize_recording(
    recording_dir: Path, job: FinalizeInput, progress_path: Path | None = None
) -> Finalized:
    """Finalize one recording in place; see the module docstring. Blocking, CPU-bound,
    run it in a worker process. Returns the duration, the files (with sizes and sha256),
    the chapters, the loudness figures and the damage found.

    Raises :class:`FinalizeError` when there is no decodable audio at all.
    """
    root = Path(recording_dir)
    progress = ProgressFile(progress_path)
    progress(FinalizeStage.READING, 0.0, force=True)
    # an earlier run cut short while replacing its set: complete that set first
    outputs.finish_publishing(root)
    for leftover in root.rglob(f"*{layout.PART_SUFFIX}"):
        leftover.unlink()
    plan = make_plan(root, job)
    if not any(seat.segments for seat in plan.seats):
        raise FinalizeError("there is no recorded audio to finalize")
    if plan.total <= 0:
        raise FinalizeError("the recording has no length: nothing was recorded")
    temp = {name: root / (name + layout.PART_SUFFIX) for name in outputs.output_names(plan)}
    merges = seat_merges(root, plan)
    _steady_malloc()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        return _finalize(root, job, plan, temp, progress, progress_path, merges)
    finally:
        sys.setswitchinterval(switch_interval)
        if not (root / outputs.PUBLISHING).exists():  # else they complete the set later
            for path in temp.values():
                path.unlink(missing_ok=True)
        for merge in merges.values():
            merge.close()


def _finalize(
    root: Path,
    job: FinalizeInput,
    plan: Plan,
    temp: Mapping[str, Path],
    progress: ProgressFile,
    progress_path: Path | None,
    merges: Mapping[str, SeatMerge],
) -> Finalized:
    duration = plan.total / SAMPLE_RATE
    analysis = analyse(plan, job, temp, progress, merges)
    _settle_voices(plan, analysis)
    master_loudness = _master_loudness(analysis)
    outline = outputs.make_outline(job, plan, duration)
    waveform, access_loudness = _master_and_access(
        plan, job, analysis, temp, outline, master_loudness, progress
    )
    progress(FinalizeStage.WRITING_METADATA, 0.96, force=True)
    outputs.write_chapter_files(temp, outline.chapters)
    _write_waveform(temp, waveform, duration, outline)
    loudness = LoudnessReport(master_loudness, access_loudness)
    found = damage.in_order(plan.seats)
    files = outputs.list_files(root, temp, progress_path)
    captures = {seat: merge.report() for seat, merge in merges.items()}
    # a take with a capture may be finalized again when one arrives late: say which
    # version this one replaces (without a capture, metadata is as it always was)
    replaces = outputs.earlier_version(root) if merges else None
    document = outputs.metadata(
        job, plan, outline, loudness, analysis.voices, found, files, captures, replaces
    )
    outputs.write_json(temp[layout.METADATA], document)
    files.append(outputs.file_entry(root, layout.METADATA, temp[layout.METADATA]))
    files.append(outputs.publish(root, temp, files))
    progress(FinalizeStage.DONE, 1.0, force=True)
    return Finalized(
        duration_s=round(duration, 3),
        files=tuple(files),
        chapters=outline.result_chapters(),
        loudness=loudness,
        damaged=tuple(found),
    )


def _settle_voices(plan: Plan, analysis: Analysis) -> None:
    """After pass 1: there must be audio; packet losses join each seat's damage, and a
    voice that went past full scale gets the gain that brings it back."""
    if not any(voice.audio_samples for voice in analysis.voices.values()):
        raise FinalizeError("none of the recorded audio could be decoded")
    for seat in plan.seats:
        voice = analysis.voices[seat.seat]
        damage.packet_losses(seat, voice)
        voice.gain = voice_gain(voice.peak)


def _master_loudness(analysis: Analysis) -> MasterLoudness:
    """The master's figures as it will be written (after its gain, if it has one)."""
    gain = master_gain(analysis.master_peak)
    mix_loudness = analysis.loudness.integrated_lufs
    return MasterLoudness(
        integrated_lufs=None if mix_loudness is None else round(mix_loudness + db(gain), 2),
        loudness_range_lu=analysis.loudness.loudness_range_lu,
        sample_peak_dbfs=(
            round(db(analysis.master_peak * gain), 2) if analysis.master_peak > 0 else None
        ),
        gain_db=round(db(gain), 3),
    )


def _master_and_access(
    plan: Plan,
    job: FinalizeInput,
    analysis: Analysis,
    temp: Mapping[str, Path],
    outline: outputs.Outline,
    master_loudness: MasterLoudness,
    progress: ProgressFile,
) -> tuple[WaveformPeaks, AccessLoudness]:
    """Calibrate the access copy on the programme's sample, run pass 2, and make the
    access copy again (rarely) until it is on target."""
    chunks = outputs.master_metadata(job, plan, outline, master_loudness)
    progress(FinalizeStage.CALIBRATING, 0.2, force=True)
    calibration = access.calibrate(analysis.excerpts, analysis.loudness.integrated_lufs)
    analysis.excerpts.clear()
    waveform, result = write_master_and_access(
        plan,
        job,
        analysis,
        temp,
        chunks,
        outline,
        calibration.gain_db,
        calibration.ceiling_db,
        progress,
    )
    encodes = 1
    for _ in range(MAX_ACCESS_REWRITES):
        retry = access.correction(result, calibration.slope)
        if retry is None:
            break
        gain_db, ceiling_db = retry
        result = rewrite_access(plan, job, analysis, temp, outline, gain_db, ceiling_db, progress)
        encodes += 1
    return waveform, result.loudness(encodes)


def _write_waveform(
    temp: Mapping[str, Path], waveform: WaveformPeaks, duration: float, outline: outputs.Outline
) -> None:
    """The picture for staff and the levels for the players, from the same peaks."""
    chapters = [(c.start_s, c.title) for c in outline.chapters]
    svg = waveform_svg(waveform.peaks, duration, chapters)
    temp[layout.WAVEFORM].write_text(svg, encoding="utf-8")
    temp[layout.WAVEFORM_LEVELS].write_text(
        waveform_json(waveform.peaks, duration), encoding="utf-8"
    )


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
