"""What the finalized files say: tags, chapters, the master's metadata chunks,
`metadata.json`, the file list and the sha256 manifest; and putting the set in place.

Every output is written under its name plus ``.part`` and renamed only when the
whole set is complete; the manifest, over every file in the folder except hidden
bookkeeping files (such as the job's progress file), is written last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fractions
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from storyroom.finalize.bwf import Bext, CuePoint
from storyroom.finalize.contracts import (
    Chapter,
    Cue,
    Damage,
    FileKind,
    Finalized,
    FinalizedFile,
    FinalizeError,
    FinalizeInput,
    LoudnessReport,
    MasterLoudness,
)
from storyroom.finalize.decode import VoiceStats
from storyroom.finalize.encoders import MP3_BIT_RATE
from storyroom.finalize.loudness import db
from storyroom.finalize.plan import PAN, Plan, SeatPlan
from storyroom.finalize.progress import REPLACING_SUFFIX
from storyroom.recording import layout
from storyroom.recording.oggopus import fsync_directory
from storyroom.recording.timeline import SAMPLE_RATE
from storyroom.records import FieldsRecord
from storyroom.status import RecordingState

if TYPE_CHECKING:
    from av.container.core import Chapter as Id3Chapter

PUBLISHING: Final = ".publishing.json"
"""A publication of a finalized set under way (hidden: never listed, never shipped)."""

_KINDS: Final = {
    layout.MASTER: FileKind.MASTER,
    layout.ACCESS_COPY: FileKind.ACCESS,
    layout.CHAPTERS_VTT: FileKind.CHAPTERS,
    layout.CHAPTERS_JSON: FileKind.CHAPTERS,
    layout.METADATA: FileKind.METADATA,
    layout.MANIFEST: FileKind.MANIFEST,
    layout.WAVEFORM: FileKind.WAVEFORM,
    layout.WAVEFORM_LEVELS: FileKind.WAVEFORM,
    layout.TRANSCRIPT_JSON: FileKind.TRANSCRIPT,
    layout.TRANSCRIPT_VTT: FileKind.TRANSCRIPT,
    layout.TRANSCRIPT_TXT: FileKind.TRANSCRIPT,
}


def utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def output_names(plan: Plan) -> list[str]:
    """The files finalization writes (the manifest, written last, apart), in the order
    they are listed."""
    return [
        layout.MASTER,
        *(layout.finalized_stem(seat.seat) for seat in plan.seats),
        layout.ACCESS_COPY,
        layout.CHAPTERS_VTT,
        layout.CHAPTERS_JSON,
        layout.WAVEFORM,
        layout.WAVEFORM_LEVELS,
        layout.METADATA,
    ]


def stem_tags(job: FinalizeInput, seat: SeatPlan) -> dict[str, str]:
    who = f"{seat.name} ({seat.seat})" if seat.name else seat.seat
    return {
        "title": f"{job.title} - {who}",
        "artist": seat.name,
        "date": utc(job.started_at).strftime("%Y-%m-%d"),
        "language": job.language,
        "comment": f"storyroom recording {job.recording_id}, seat {seat.seat}, "
        f"aligned to {layout.MASTER}",
        "STORYROOM_RECORDING": job.recording_id,
        "STORYROOM_SEAT": seat.seat,
    }


# -- the outline: cues, chapters, markers -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlacedCue:
    """A cue on the recording's clock (clamped to it), with its chapter title."""

    cue: Cue
    rec_time: float
    title: str

    def to_json(self) -> dict[str, Any]:
        return {**self.cue.to_json(), "rec_time": self.rec_time}


@dataclass(frozen=True, slots=True)
class ChapterSpan(FieldsRecord):
    start_s: float
    end_s: float
    title: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A facilitator's marker, or a pause (with how long it lasted, if it ended)."""

    seq: int | None
    kind: str
    """``marker`` or ``pause``."""
    label: str
    rec_time: float
    paused_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind,
            "label": self.label,
            "rec_time": self.rec_time,
        }
        if self.kind == "pause":
            value["paused_s"] = self.paused_s
        return value


@dataclass(frozen=True, slots=True)
class Outline:
    """The recording's cues, the chapters they start, and its markers and pauses."""

    cues: list[PlacedCue]
    chapters: list[ChapterSpan]
    marks: list[Mark]

    def id3_chapters(self) -> list[Id3Chapter]:
        return [
            {
                "id": number,
                "start": round(c.start_s * 1000),
                "end": round(c.end_s * 1000),
                "time_base": fractions.Fraction(1, 1000),
                "metadata": {"title": c.title},
            }
            for number, c in enumerate(self.chapters)
        ]

    def result_chapters(self) -> tuple[Chapter, ...]:
        return tuple(Chapter(c.start_s, c.title) for c in self.chapters)


def make_outline(job: FinalizeInput, plan: Plan, duration: float) -> Outline:
    cues = _placed_cues(job.cues, duration)
    chapters = [
        ChapterSpan(
            cue.rec_time,
            round(cues[number + 1].rec_time if number + 1 < len(cues) else duration, 3),
            cue.title,
        )
        for number, cue in enumerate(cues)
    ]
    return Outline(cues, chapters, _marks(job, plan, duration))


def _placed_cues(cues: Iterable[Cue], duration: float) -> list[PlacedCue]:
    """Cues on the clock, in order; a cue re-made at the same instant replaces the last."""
    placed: list[PlacedCue] = []
    for cue in sorted(cues, key=lambda c: (c.rec_time, c.seq)):
        at = min(max(cue.rec_time, 0.0), duration)
        title = cue.text or cue.question_id or "Question"
        entry = PlacedCue(cue, round(at, 3), " ".join(title.split()))
        if placed and round(placed[-1].rec_time * 1000) == round(at * 1000):
            placed[-1] = entry
        else:
            placed.append(entry)
    return placed


def _marks(job: FinalizeInput, plan: Plan, duration: float) -> list[Mark]:
    """The facilitator's markers, and one at each pause (from `recording.jsonl`, with
    how long it lasted); a plain "pause"/"resume" marker at the same place is dropped."""
    paused_at = [pause.rec_time for pause in plan.pauses]
    marks = [
        Mark(m.seq, "marker", m.label or "Marker", round(min(max(m.rec_time, 0.0), duration), 3))
        for m in job.markers
        if not (
            m.label.lower() in ("pause", "resume")
            and any(abs(m.rec_time - at) < 0.1 for at in paused_at)
        )
    ]
    for pause in plan.pauses:
        length = pause.paused_s
        marks.append(
            Mark(
                None,
                "pause",
                f"Paused {length:.0f} s" if length is not None else "Paused",
                round(min(max(pause.rec_time, 0.0), duration), 3),
                None if length is None else round(length, 3),
            )
        )
    marks.sort(key=lambda m: m.rec_time)
    return marks


# -- the master's chunks ----------------------------------------------------------------------


def master_metadata(
    job: FinalizeInput, plan: Plan, outline: Outline, loudness: MasterLoudness
) -> tuple[Bext, dict[str, str], list[CuePoint]]:
    """The Broadcast WAV's bext and LIST-INFO, and a cue point at every cue and mark."""
    started = utc(job.started_at)
    midnight = started.replace(hour=0, minute=0, second=0, microsecond=0)
    names = ", ".join(f"{p.seat}={p.name}" for p in plan.seats if p.name)
    description = f"{job.title} - storyroom recording {job.recording_id}, take {job.take}"
    if job.status is RecordingState.INTERRUPTED:
        description += " (interrupted)"
    history = (
        "A=OPUS,F=48000,M=mono,T=WebRTC browser capture; one stem per seat and connection\r\n"
        f"A=PCM,F=48000,W=24,M=stereo,T={job.software}; decoded, aligned to the recording "
        "clock and mixed (a left, b right, facilitator centre)\r\n"
    )
    bext = Bext(
        description=description,
        originator=job.originator,
        originator_reference=job.recording_id,
        origination_date=started.strftime("%Y-%m-%d"),
        origination_time=started.strftime("%H:%M:%S"),
        time_reference=round((job.started_at - midnight.timestamp()) * SAMPLE_RATE),
        coding_history=history,
        loudness_value=loudness.integrated_lufs,
        loudness_range=loudness.loudness_range_lu,
    )
    info = {
        "INAM": job.title,
        "ICRD": started.strftime("%Y-%m-%d"),
        "ISFT": job.software,
        "ILNG": job.language,
        "ICMT": f"storyroom session {job.session_id}, recording {job.recording_id}, "
        f"take {job.take}; seats: {names}; times are UTC",
    }
    points = [CuePoint(round(c.rec_time * SAMPLE_RATE), c.title) for c in outline.cues]
    points += [CuePoint(round(m.rec_time * SAMPLE_RATE), m.label) for m in outline.marks]
    points.sort(key=lambda p: p.sample)
    return bext, info, points


# -- chapter files, metadata.json, the file list --------------------------------------------------


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def write_chapter_files(temp: Mapping[str, Path], chapters: list[ChapterSpan]) -> None:
    """WebVTT chapters and Podcasting 2.0 chapters."""
    lines = ["WEBVTT", ""]
    for number, chapter in enumerate(chapters, 1):
        lines += [
            str(number),
            f"{_vtt_time(chapter.start_s)} --> {_vtt_time(chapter.end_s)}",
            chapter.title.replace("-->", "→"),
            "",
        ]
    temp[layout.CHAPTERS_VTT].write_text("\n".join(lines), encoding="utf-8")
    write_json(
        temp[layout.CHAPTERS_JSON],
        {
            "version": "1.2.0",
            "chapters": [{"startTime": c.start_s, "title": c.title} for c in chapters],
        },
    )


def metadata(
    job: FinalizeInput,
    plan: Plan,
    outline: Outline,
    loudness: LoudnessReport,
    voices: Mapping[str, VoiceStats],
    damage: list[Damage],
    files: list[FinalizedFile],
    captures: Mapping[str, dict[str, Any]] | None = None,
    replaces: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`metadata.json` (docs/recording-format.md §8); `captures`: per seat, what its
    browser capture filled (only seats with a capture get a `capture` entry);
    `replaces`: the earlier finalization this one replaces (:func:`earlier_version`)."""
    captures = captures or {}
    document = {
        "recording_id": job.recording_id,
        "session_id": job.session_id,
        "title": job.title,
        "kind": job.kind.value,
        "language": job.language,
        "take": job.take,
        "status": job.status.value,
        "started_at": utc(job.started_at).isoformat(),
        "duration_s": round(plan.total / SAMPLE_RATE, 3),
        "seats": {p.seat: {"name": p.name} for p in plan.seats},
        "consent": {seat: flags.to_json() for seat, flags in job.consent.items()},
        "cues": [c.to_json() for c in outline.cues],
        "markers": [m.to_json() for m in outline.marks],
        "chapters": [c.to_json() for c in outline.chapters],
        "loudness": loudness.to_json(),
        "stems": {
            p.seat: _stem_entry(p, voices[p.seat])
            | ({"capture": captures[p.seat]} if p.seat in captures else {})
            for p in plan.seats
        },
        "damaged": [d.to_json() for d in damage],
        "format": {
            "master": "Broadcast WAV (bext, LIST-INFO, cue/adtl), 48 kHz, 24-bit, stereo",
            "stems": "FLAC, 48 kHz, 24-bit, mono, aligned to the master",
            "access": f"MP3 {MP3_BIT_RATE // 1000} kbit/s stereo, ID3v2.4 CHAP/CTOC",
            "time": "seconds on the recording clock (pauses excluded); dates UTC",
        },
        "software": job.software,
        "originator": job.originator,
        "finalized_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": [f.to_json() for f in files],
    }
    if replaces is not None:
        document["replaces"] = replaces
    return document


def earlier_version(root: Path) -> dict[str, Any] | None:
    """The finalized set already in `root`, if any, as the next one records it: the
    sha256 of its `metadata.json` and manifest, and when it was made."""
    metadata_path, manifest_path = root / layout.METADATA, root / layout.MANIFEST
    if not metadata_path.is_file():
        return None
    earlier = file_entry(root, layout.METADATA)
    try:
        finalized_at = json.loads(metadata_path.read_text("utf-8")).get("finalized_at")
    except (ValueError, AttributeError):
        finalized_at = None  # unreadable: its checksum still identifies it
    return {
        "metadata_sha256": earlier.sha256,
        "manifest_sha256": (
            file_entry(root, layout.MANIFEST).sha256 if manifest_path.is_file() else None
        ),
        "finalized_at": finalized_at,
    }


def _stem_entry(seat: SeatPlan, voice: VoiceStats) -> dict[str, Any]:
    return {
        "file": layout.finalized_stem(seat.seat),
        "segments": len(seat.segments),
        "decoded_segments": voice.decoded_segments,
        "audio_s": round(voice.audio_samples / SAMPLE_RATE, 3),
        "peak_dbfs": round(db(voice.peak), 2) if voice.peak > 0 else None,
        "gain_db": round(db(voice.gain), 3),
        "pan": PAN.get(seat.seat, 0.0),
        "packets_lost": {
            "lost": voice.count("packets"),
            "recovered_fec": voice.count("fec"),
            "concealed_plc": voice.count("plc"),
            "silent_outage": voice.count("silent"),
            "longest_concealed_s": round(voice.longest_concealed_s, 3),
        },
    }


def list_files(
    root: Path, temp: Mapping[str, Path], progress_path: Path | None
) -> list[FinalizedFile]:
    """The new outputs but `metadata.json` (which lists them), then the raw files kept
    beside them."""
    files = [file_entry(root, name, path) for name, path in temp.items() if name != layout.METADATA]
    skip = {str(progress_path.resolve())} if progress_path is not None else set()
    outputs = set(temp) | {layout.MANIFEST}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if (
            not path.is_file()
            or name in outputs
            or any(part.startswith(".") for part in path.relative_to(root).parts)
            or layout.is_finalized_stem(name)
            or name.endswith((layout.PART_SUFFIX, REPLACING_SUFFIX))
            or str(path.resolve()) in skip
        ):
            continue
        files.append(file_entry(root, name))
    return files


def file_entry(root: Path, name: str, path: Path | None = None) -> FinalizedFile:
    """`name` (relative to `root`) with its kind, size and sha256, read from `path`."""
    path = path or root / name
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    kind = _KINDS.get(name) or (
        FileKind.STEM if layout.is_finalized_stem(name) else FileKind.SOURCE
    )
    return FinalizedFile(name, kind, path.stat().st_size, digest)


def write_json(path: Path, value: Any) -> None:
    with open(path, "x", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")


def publish(root: Path, temp: Mapping[str, Path], files: list[FinalizedFile]) -> FinalizedFile:
    """All complete: move the outputs into place and stale stems out, then write the
    manifest of `files`; returns the manifest's own entry.

    The set is replaced as a whole: what is to be done is first written durably to a
    journal (`PUBLISHING`), then done, then the journal removed. A crash in between
    leaves the journal, and `finish_publishing` (the next finalization's first step)
    completes the new set; the folder never stays a mix of two versions."""
    stale = [
        f"{layout.STEMS}/{path.name}"
        for path in sorted((root / layout.STEMS).glob("*.flac"))
        if f"{layout.STEMS}/{path.name}" not in temp
    ]
    journal = {
        "moves": {name: path.relative_to(root).as_posix() for name, path in temp.items()},
        "stale": stale,
        "manifest": _manifest_text(files),
    }
    part = root / (PUBLISHING + layout.PART_SUFFIX)
    with open(part, "w", encoding="utf-8") as f:
        json.dump(journal, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, root / PUBLISHING)
    fsync_directory(root)
    finish_publishing(root)
    return file_entry(root, layout.MANIFEST)


def finish_publishing(root: Path) -> bool:
    """Complete a publication a crash cut short (see `publish`); True if there was one.
    Moves already done are skipped, so it can itself be cut short and run again."""
    path = root / PUBLISHING
    if not path.exists():
        return False
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        moves = {str(k): str(v) for k, v in journal["moves"].items()}
        stale = [str(name) for name in journal["stale"]]
        manifest = str(journal["manifest"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FinalizeError(f"{PUBLISHING} cannot be read: {exc}") from exc
    for name in [*moves, *moves.values(), *stale]:
        if not _inside(name):
            raise FinalizeError(f"{PUBLISHING} names a path outside the recording: {name!r}")
    for name, temp_name in moves.items():
        if (root / temp_name).exists():
            os.replace(root / temp_name, root / name)
    for name in stale:
        (root / name).unlink(missing_ok=True)
    manifest_temp = root / (layout.MANIFEST + layout.PART_SUFFIX)
    with open(manifest_temp, "w", encoding="utf-8") as f:
        f.write(manifest)
        f.flush()
        os.fsync(f.fileno())
    os.replace(manifest_temp, root / layout.MANIFEST)
    for folder in {root, *((root / name).parent for name in moves)}:
        fsync_directory(folder)
    path.unlink()
    fsync_directory(root)
    return True


def _inside(name: str) -> bool:
    """A relative path that stays in the recording's folder (what publish writes)."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "" not in parts


def _manifest_text(files: Iterable[FinalizedFile]) -> str:
    listed = sorted((f for f in files if f.name != layout.MANIFEST), key=lambda f: f.name)
    return "".join(f"{f.sha256}  {f.name}\n" for f in listed)


def write_manifest(root: Path, files: Iterable[FinalizedFile]) -> FinalizedFile:
    """Write the sha256 manifest of `files` (the manifest itself left out), by rename;
    returns the manifest's own entry."""
    manifest = root / layout.MANIFEST
    manifest_temp = root / (layout.MANIFEST + layout.PART_SUFFIX)
    manifest_temp.write_text(_manifest_text(files), encoding="utf-8")
    os.replace(manifest_temp, manifest)
    return file_entry(root, layout.MANIFEST)


def relist(
    root: Path, finalized: Finalized, added: Iterable[str] = (), removed: Iterable[str] = ()
) -> Finalized:
    """`finalized` with the files `added` (written since, or rewritten) listed anew and
    `removed` left out, and the manifest rewritten to match: how files made after
    finalization (the transcript) join the recording's list, manifest and bag."""
    changed = set(added) | set(removed)
    kept = [f for f in finalized.files if f.name not in changed and f.name != layout.MANIFEST]
    kept += [file_entry(root, name) for name in added]
    kept.append(write_manifest(root, kept))
    return dataclasses.replace(finalized, files=tuple(kept))
